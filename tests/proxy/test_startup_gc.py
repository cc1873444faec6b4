"""The queue-proxy's entry module turns the collector off during its imports only when it starts
the sidecar (issue 19: start-up CPU in every pod), and leaves it on, with the imported objects
frozen out of its sight; imported by anything else it changes nothing."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]


@pytest.mark.parametrize(
    ("argv0", "expected"),
    [
        ("/opt/sluice/bin/sluice-queue-proxy", "True True"),  # the image's console script
        ("-c", "True False"),  # tests, tools
    ],
)
def test_collector_after_importing_the_entry_module(argv0: str, expected: str) -> None:
    code = (
        f"import sys; sys.argv[0] = {argv0!r}\n"
        "import gc, proxy.__main__\n"
        "print(gc.isenabled(), gc.get_freeze_count() > 0)\n"
    )
    out = subprocess.run([sys.executable, "-c", code], cwd=ROOT, capture_output=True, text=True, timeout=60)
    assert out.returncode == 0, out.stderr
    assert out.stdout.strip() == expected
