"""The pod `log` subresource: `GET /api/v1/namespaces/<ns>/pods/<name>/log`.

On a cluster the API server proxies this to the node's kubelet; here the kubelet is a part of the
same process, so it hands the API a `PodLogSource` (the file a container's output is captured in)
and the API server reads it: `container`, `tailLines`, `limitBytes`, `previous`, and `follow`
(the file is polled and streamed until the pod is gone, the client leaves or the server stops).
The captured output carries no timestamps, so `timestamps`/`sinceSeconds` are not honoured.
"""

from __future__ import annotations

import asyncio
import os
from collections.abc import Callable
from pathlib import Path
from typing import Any, Protocol

from . import errors

FOLLOW_POLL = 0.2  # seconds between looks at a followed file
CHUNK = 64 * 1024


class PodLogSource(Protocol):
    def log_path(self, namespace: str, pod: str, container: str, previous: bool) -> Path | None:
        """The file holding the container's output (of its previous run), or None."""
        ...


def choose_container(pod: dict[str, Any], requested: str) -> str:
    spec = pod.get("spec") or {}
    names = [c.get("name", "") for c in (spec.get("containers") or ())]
    names += [c.get("name", "") for c in (spec.get("initContainers") or ())]
    name = pod["metadata"]["name"]
    if not requested:
        if len(names) == 1:
            return str(names[0])
        raise errors.bad_request(
            f"a container name must be specified for pod {name}, choose one of: [{' '.join(names)}]"
        )
    if requested not in names:
        raise errors.bad_request(f"container {requested} is not valid for pod {name}")
    return requested


def waiting_reason(pod: dict[str, Any], container: str) -> str:
    for cs in (pod.get("status") or {}).get("containerStatuses") or ():
        if cs.get("name") == container:
            waiting = (cs.get("state") or {}).get("waiting") or {}
            return str(waiting.get("reason") or "ContainerCreating")
    return "ContainerCreating"


def tail_bytes(data: bytes, lines: int) -> bytes:
    if lines <= 0:
        return b""
    parts = data.split(b"\n")
    trailing = parts[-1] == b""
    if trailing:
        parts = parts[:-1]
    kept = parts[-lines:]
    return b"\n".join(kept) + (b"\n" if trailing and kept else b"")


def read_initial(path: Path, tail: int | None, limit: int | None) -> tuple[bytes, int, int]:
    """(bytes to send, the offset reached, the file's inode)."""
    with path.open("rb") as f:
        st = os.fstat(f.fileno())
        data = f.read()
    if tail is not None:
        data = tail_bytes(data, tail)
    if limit is not None:
        data = data[:limit]
    return data, st.st_size, st.st_ino


async def follow(
    path: Path,
    offset: int,
    inode: int,
    write: Callable[[bytes], Any],
    alive: Callable[[], bool],
    budget: int | None,
) -> None:
    """Streams what is appended to `path` (a restarted container starts a new file: read from 0)."""
    sent = 0
    while alive():
        await asyncio.sleep(FOLLOW_POLL)
        data, offset, inode = _appended(path, offset, inode)
        if budget is not None:
            data = data[: max(0, budget - sent)]
        if data:
            await write(data)
            sent += len(data)
        if budget is not None and sent >= budget:
            return


def _appended(path: Path, offset: int, inode: int) -> tuple[bytes, int, int]:
    """What was written since `offset` (small reads between polls; a new inode starts over)."""
    try:
        st = path.stat()
    except OSError:
        return b"", offset, inode
    if st.st_ino != inode or st.st_size < offset:
        inode, offset = st.st_ino, 0
    if st.st_size == offset:
        return b"", offset, inode
    with path.open("rb") as f:
        f.seek(offset)
        data = f.read(st.st_size - offset)
    return data, offset + len(data), inode
