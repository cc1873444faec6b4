from __future__ import annotations

from tests.activator.conftest import Autoscaler, Kube, MakeActivator, autoscaler, kube, make_activator
from tests.proxy.conftest import MakeQP, make_qp

__all__ = ["Autoscaler", "Kube", "MakeActivator", "MakeQP", "autoscaler", "kube", "make_activator", "make_qp"]
