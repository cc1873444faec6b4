"""The state directory of `sluice local` (`$SLUICE_HOME`, else `~/.sluice`, then `local/`).

`state.json` names the supervisor and every process it started (pid = process group, plus the
start time so a reused PID is never signalled), so `down` stops exactly those even if the
supervisor itself was killed. `status.json` is the live snapshot `status` renders;
`samples.jsonl` the time series `report` plots; `logs/` every process's output.
"""

from __future__ import annotations

import json
import os
import signal
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from .procs import proc_start_ticks, signal_group

__all__ = ["StateDir", "default_home"]


def default_home() -> Path:
    env = os.environ.get("SLUICE_HOME")
    base = Path(env) if env else Path.home() / ".sluice"
    return base / "local"


@dataclass(frozen=True, slots=True)
class StateDir:
    root: Path

    @property
    def state_file(self) -> Path:
        return self.root / "state.json"

    @property
    def status_file(self) -> Path:
        return self.root / "status.json"

    @property
    def samples_file(self) -> Path:
        return self.root / "samples.jsonl"

    @property
    def kubeconfig(self) -> Path:
        return self.root / "kubeconfig"

    @property
    def logs(self) -> Path:
        return self.root / "logs"

    def write_json(self, path: Path, data: Any) -> None:
        self.root.mkdir(parents=True, exist_ok=True)
        tmp = path.with_suffix(path.suffix + ".tmp")
        tmp.write_text(json.dumps(data, indent=1))
        os.replace(tmp, path)

    def read_json(self, path: Path) -> Any:
        try:
            return json.loads(path.read_text())
        except (OSError, ValueError):
            return None

    def read_state(self) -> dict[str, Any] | None:
        data = self.read_json(self.state_file)
        return data if isinstance(data, dict) else None

    def live_supervisor(self) -> dict[str, Any] | None:
        """The state of a running supervisor, or None (no state, or its process is gone)."""
        state = self.read_state()
        if state is None:
            return None
        sup = state.get("supervisor") or {}
        if not _alive(int(sup.get("pid", 0)), sup.get("start")):
            return None
        return state

    def kill_recorded(self, state: dict[str, Any], sig: int = signal.SIGKILL) -> list[str]:
        """Signals every recorded process group still alive with its recorded start time."""
        killed = []
        for proc in state.get("processes") or ():
            pid = int(proc.get("pid", 0))
            if pid > 0 and _alive(pid, proc.get("start")):
                signal_group(pid, sig)
                killed.append(f"{proc.get('name')} (pid {pid})")
        return killed


def _alive(pid: int, start: Any) -> bool:
    if pid <= 0:
        return False
    ticks = proc_start_ticks(pid)
    return ticks is not None and (start is None or ticks == start)
