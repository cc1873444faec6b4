"""Sends coalesced to the end of a busy event-loop iteration.

On this class of machine a send on loopback costs most of its time waking the
receiving process on the other CPU (an inter-processor interrupt, a VM exit under
virtualisation). Sent one by one while other requests are still being parsed, each
send finds the peer asleep again; sent back to back at the end of the iteration,
the first wakes the peer and the rest find it running (bench/RESULTS.md: about
+25 % req/s at wrk -c50). The bytes and the syscalls are the same; only their
timing moves, by at most the rest of one loop iteration.

Coalescing costs a `call_soon` per iteration, which is an extra non-blocking poll
when only one connection is active: at c=1 there is nothing to coalesce with and it
would only add latency. So the outbox adapts. It starts *direct*: writes go out at
once, and one write in 64 starts a probe that counts the writes of the whole next
iteration. Two or more mean the loop is busy: the outbox switches to
*coalescing*, where writes are queued per connection and sent, in the order the
connections first queued, by one callback at the end of the iteration. Eight
iterations in a row with at most one connection queued switch it back.

A connection's bytes stay in order: a connection with bytes queued queues the rest
behind them, and one that closes sends its queue first.
"""

from __future__ import annotations

import asyncio
from typing import Protocol

__all__ = ["Flushable", "Outbox", "OutboxWriter", "outbox"]

_PROBE_EVERY = 64  # direct writes between two probes of the load
_BUSY_WRITES = 2  # further writes in a probed iteration that mean "busy"
_QUIET_ITERATIONS = 8  # coalescing iterations with <= 1 connection before going direct


class Flushable(Protocol):
    def flush_out(self) -> None: ...


class Outbox:
    __slots__ = ("_loop", "_probe_base", "_quiet", "coalescing", "pending", "writes")

    def __init__(self, loop: asyncio.AbstractEventLoop) -> None:
        self._loop = loop
        self.coalescing = False
        self.pending: list[Flushable] = []
        self.writes = 0  # direct writes, counted for the probe
        self._probe_base = -1
        self._quiet = 0

    def direct(self) -> bool:
        """Whether the caller, with nothing queued, should send at once."""
        if self.coalescing:
            if not self.pending:
                self._loop.call_soon(self.flush)
            return False
        writes = self.writes = self.writes + 1
        if writes % _PROBE_EVERY == 0:
            self._loop.call_soon(self._probe_start)
        return True

    def _probe_start(self) -> None:
        # Runs after this iteration's I/O callbacks; what it schedules runs after the
        # next iteration's: between the two, exactly one iteration's writes.
        self._probe_base = self.writes
        self._loop.call_soon(self._probe_end)

    def _probe_end(self) -> None:
        if not self.coalescing and self.writes - self._probe_base >= _BUSY_WRITES:
            self.coalescing = True
            self._quiet = 0

    def flush(self) -> None:
        """End of a coalescing iteration: the queued bytes go out, in order."""
        pending, self.pending = self.pending, []
        if len(pending) <= 1:
            self._quiet += 1
            if self._quiet >= _QUIET_ITERATIONS:
                self.coalescing = False
        else:
            self._quiet = 0
        for conn in pending:
            conn.flush_out()


_outboxes: dict[asyncio.AbstractEventLoop, Outbox] = {}


def outbox(loop: asyncio.AbstractEventLoop) -> Outbox:
    """The loop's outbox, one per loop."""
    box = _outboxes.get(loop)
    if box is None:
        if len(_outboxes) >= 16:  # test suites make many loops: forget the closed ones
            for old in [lp for lp in _outboxes if lp.is_closed()]:
                del _outboxes[old]
        box = _outboxes[loop] = Outbox(loop)
    return box


class OutboxWriter:
    """The write side of a connection Protocol (server and upstream alike) through its
    loop's outbox. The class provides `transport` and `closed`, calls `OutboxWriter.__init__`
    and, in `connection_made`, `_attach_outbox()`; it calls `flush_out()` before closing
    its transport."""

    __slots__ = ("_out", "_outbox")

    transport: asyncio.Transport | None
    closed: bool
    _outbox: Outbox

    def __init__(self) -> None:
        self._out: list[bytes] = []  # bytes written this loop iteration, not yet sent

    def _attach_outbox(self) -> None:
        self._outbox = outbox(asyncio.get_running_loop())

    def write(self, data: bytes) -> None:
        transport = self.transport
        if transport is not None and not self.closed:
            out = self._out
            if not out:
                if self._outbox.direct():
                    transport.write(data)
                    return
                self._outbox.pending.append(self)
            out.append(data)

    def writelines(self, parts: tuple[bytes, ...]) -> None:
        transport = self.transport
        if transport is not None and not self.closed:
            out = self._out
            if not out:
                if self._outbox.direct():
                    transport.writelines(parts)
                    return
                self._outbox.pending.append(self)
            out.extend(parts)

    def flush_out(self) -> None:
        out = self._out
        if out:
            self._out = []
            if self.transport is not None and not self.closed:
                self.transport.writelines(out)
