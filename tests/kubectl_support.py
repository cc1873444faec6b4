"""Finding the real kubectl for the tests that drive it (scripts/install-tools puts one in tools/)."""

from __future__ import annotations

import shutil
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def kubectl_binary() -> str | None:
    local = ROOT / "tools" / "kubectl"
    if local.is_file():
        return str(local)
    return shutil.which("kubectl")


SKIP_REASON = "kubectl is not installed (run scripts/install-tools, which puts it in tools/kubectl)"
