"""`sluice local kubeconfig [--merge | --unmerge]`: where kubectl finds `sluice local`.

The instance writes its own kubeconfig (context, cluster and user all named `sluice-local`) into
its state directory on every `up`. `--merge` copies those three entries into the user's
kubeconfig the way `kind` and `minikube` do: the first file of `$KUBECONFIG` if set (kubectl
writes there too), else `~/.kube/config`; a backup is kept on the first change, other entries
and `current-context` are left as they are, and a second merge replaces only our entries.
`--unmerge` removes them again. Once merged, each `up` of the default instance (no `--home`)
refreshes the entries (the server port and token change per start), so `kubectl --context
sluice-local` keeps working.
"""

from __future__ import annotations

import os
import shutil
from pathlib import Path
from typing import Any

import yaml

__all__ = ["CONTEXT", "KubeconfigError", "merge", "refresh_if_merged", "unmerge", "user_kubeconfig"]

CONTEXT = "sluice-local"
_SECTIONS = (("clusters", "cluster"), ("users", "user"), ("contexts", "context"))


class KubeconfigError(Exception):
    pass


def user_kubeconfig(environ: dict[str, str] | None = None) -> Path:
    """The file kubectl writes to: the first entry of $KUBECONFIG, else ~/.kube/config."""
    env = os.environ if environ is None else environ
    for entry in env.get("KUBECONFIG", "").split(os.pathsep):
        if entry.strip():
            return Path(entry).expanduser()
    return Path.home() / ".kube" / "config"


def _load(path: Path) -> dict[str, Any]:
    try:
        text = path.read_text()
    except FileNotFoundError:
        return {}
    except OSError as exc:
        raise KubeconfigError(f"cannot read {path}: {exc.strerror or exc}") from None
    try:
        data = yaml.safe_load(text)
    except yaml.YAMLError as exc:
        raise KubeconfigError(f"{path} is not valid YAML ({exc}); not touching it") from None
    if data is None:
        return {}
    if not isinstance(data, dict):
        raise KubeconfigError(f"{path} is not a kubeconfig (a YAML mapping); not touching it")
    return data


def _write(path: Path, data: dict[str, Any]) -> None:
    """Atomically, mode 0600 (the file holds bearer tokens)."""
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(path.name + ".sluice-tmp")
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "w") as f:
        yaml.safe_dump(data, f, sort_keys=False)
    os.replace(tmp, path)


def _ours(source: Path) -> dict[str, dict[str, Any]]:
    src = _load(source)
    out: dict[str, dict[str, Any]] = {}
    for section, _ in _SECTIONS:
        entry = next((e for e in src.get(section) or () if isinstance(e, dict) and e.get("name") == CONTEXT), None)
        if entry is None:
            raise KubeconfigError(f"{source} has no {section[:-1]} named {CONTEXT!r}")
        out[section] = entry
    return out


def _replace(data: dict[str, Any], ours: dict[str, dict[str, Any]] | None) -> bool:
    """Puts our entries in (or takes them out with None); True if anything changed."""
    changed = False
    for section, _ in _SECTIONS:
        entries = [e for e in data.get(section) or () if not (isinstance(e, dict) and e.get("name") == CONTEXT)]
        if ours is not None:
            entries.append(ours[section])
        if entries != (data.get(section) or []):
            changed = True
        if entries or section in data:
            data[section] = entries
    return changed


def _backup(path: Path) -> Path | None:
    if not path.exists():
        return None
    backup = path.with_name(path.name + ".sluice-backup")
    if not backup.exists():  # the state before Sluice first touched it
        shutil.copy2(path, backup)
    return backup


def merge(source: Path, target: Path) -> str:
    ours = _ours(source)
    data = _load(target)
    data.setdefault("apiVersion", "v1")
    data.setdefault("kind", "Config")
    if not _replace(data, ours):
        return f"{target}: context {CONTEXT!r} already up to date"
    backup = _backup(target)
    _write(target, data)
    saved = f" (backup of the original: {backup})" if backup else ""
    return (
        f"merged context {CONTEXT!r} into {target}{saved}; current context unchanged: "
        f"use `kubectl --context {CONTEXT} get ksvc` or `kubectl config use-context {CONTEXT}`"
    )


def unmerge(target: Path) -> str:
    data = _load(target)
    if not _replace(data, None):
        return f"{target}: no {CONTEXT!r} entries"
    _backup(target)
    if data.get("current-context") == CONTEXT:
        data["current-context"] = ""
    _write(target, data)
    return f"removed context, cluster and user {CONTEXT!r} from {target}"


def refresh_if_merged(source: Path, target: Path | None = None) -> bool:
    """After `up`: brings a previously merged entry up to date (new port and token); True if done.
    Never adds the entries on its own, and never fails `up` over the user's file."""
    target = target or user_kubeconfig()
    try:
        data = _load(target)
        if not any(isinstance(e, dict) and e.get("name") == CONTEXT for e in data.get("contexts") or ()):
            return False
        if _replace(data, _ours(source)):
            _write(target, data)
        return True
    except (KubeconfigError, OSError):
        return False
