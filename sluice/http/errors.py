"""The upstream errors the HTTP client raises, in a module of their own: they subclass
a built-in exception, which mypyc cannot compile as a native class, so they stay
interpreted while the client around them is compiled (see hatch_build.py)."""

from __future__ import annotations

import errno
import os

__all__ = ["DialError", "UpstreamClosed"]


class UpstreamClosed(ConnectionError):
    """The upstream closed the connection before the response was complete."""


class DialError(ConnectionError):
    """Go-shaped dial error text, e.g. `dial tcp 127.0.0.1:8080: connect: connection refused`."""

    def __init__(self, host: str, port: int, cause: BaseException) -> None:
        if isinstance(cause, TimeoutError):
            detail = "i/o timeout"
        elif isinstance(cause, OSError) and cause.errno is not None:
            detail = "connect: " + _errno_text(cause.errno)
        else:
            detail = str(cause) or type(cause).__name__
        super().__init__(f"dial tcp {host}:{port}: {detail}")


def _errno_text(code: int) -> str:
    if code == errno.ECONNREFUSED:
        return "connection refused"
    if code == errno.ECONNRESET:
        return "connection reset by peer"
    if code == errno.EHOSTUNREACH:
        return "no route to host"
    return os.strerror(code).lower()
