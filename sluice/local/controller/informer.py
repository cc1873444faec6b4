"""`sluice local`'s informers: the shared `sluice.kube.Informer` over a `Kube` and a `GVR`.

The controller is level-triggered (each pass recomputes the desired state from the caches), so
every change only calls `on_change()` to wake it; which object changed does not matter.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from ...kube import Informer as SharedInformer
from ...kube import Key, object_key
from ..kube import GVR, Kube

__all__ = ["Informer", "Key", "key_of"]

key_of = object_key


class Informer(SharedInformer):
    def __init__(
        self,
        kube: Kube,
        gvr: GVR,
        on_change: Callable[[], None],
        namespace: str = "",
        label_selector: str = "",
        watch_timeout: int = 300,
    ) -> None:
        # A short back-off: the API is in-process or on loopback, a failure is a blip.
        super().__init__(
            gvr.plural,
            kube.list_call(gvr, namespace),
            label_selector=label_selector,
            watch_timeout=watch_timeout,
            backoff=(0.05, 2.0),
        )
        self.kube = kube
        self.gvr = gvr

        def changed(kind: str, old: dict[str, Any] | None, new: dict[str, Any] | None) -> None:
            on_change()

        self.add_handler(changed)
