"""Per-connection abuse budgets for the HTTP/2 server (h2server.py), after CVE-2023-44487
(rapid reset), CVE-2019-9512/9515 (PING and SETTINGS floods) and the 2024 CONTINUATION
flood (CVE-2024-27316 and relatives).

The queue-proxy's and the activator's HTTP/2 servers are Go's http2.Server behind
h2c.NewHandler (CONTRACT.md §2.3, §3.2), which has carried such limits since those CVEs.
Each budget is a token bucket: a burst a well-behaved client never reaches, refilled at a
steady rate. A connection that exhausts one gets GOAWAY(ENHANCE_YOUR_CALM) and is closed,
as Go's, nginx's and Netty's servers do; other connections are not affected.
"""

from __future__ import annotations

import time
from collections.abc import Callable

__all__ = [
    "CONTROL_BURST",
    "CONTROL_RATE",
    "READ_PAUSE_BYTES",
    "READ_SLICE",
    "READ_SLICE_TIME",
    "RESET_BURST",
    "RESET_RATE",
    "Budget",
]

# Streams the client cancels (RST_STREAM) before their response is complete, or that are
# refused for exceeding SETTINGS_MAX_CONCURRENT_STREAMS. Netty allows 200 per 30 s; a
# gRPC client cancelling on deadlines stays far below 100 per second on one connection.
# Each HEADERS+RST_STREAM pair costs ~0.1-0.3 ms here (h2's parsing and a dispatch).
RESET_BURST = 200
RESET_RATE = 100.0

# Frames that make us write an ACK (PING, SETTINGS). Go closes a connection with more than
# 10,000 control frames queued (maxQueuedControlFrames); gRPC servers answer a client that
# pings too often with GOAWAY(ENHANCE_YOUR_CALM, "too_many_pings"). Keep-alive pings and
# the few SETTINGS of a normal connection are orders of magnitude below.
CONTROL_BURST = 10_000
CONTROL_RATE = 1000.0

# Reading from the client stops while more than this much output waits in the socket's
# write buffer (a client that does not read its ACKs or responses): memory per connection
# stays bounded whatever it sends.
READ_PAUSE_BYTES = 1 << 20

# A big read is handed to h2 in slices of READ_SLICE bytes, for at most READ_SLICE_TIME per
# event-loop iteration: a read full of tiny frames (~28,000 SETTINGS in 256 KiB, 30-60 µs
# each in h2 on a loaded machine) is spread over many iterations so other connections are
# served between them, while a read of big DATA frames (cheap per byte) goes through in one.
READ_SLICE = 1024
READ_SLICE_TIME = 0.002


class Budget:
    """A token bucket: `spend()` returns False once events arrive faster than `rate` per
    second for longer than `burst` allows."""

    __slots__ = ("_clock", "_stamp", "burst", "rate", "tokens")

    def __init__(self, burst: float, rate: float, clock: Callable[[], float] = time.monotonic) -> None:
        self.burst = burst
        self.rate = rate
        self.tokens = burst
        self._clock = clock
        self._stamp = clock()

    def spend(self, n: float = 1.0) -> bool:
        now = self._clock()
        self.tokens = min(self.burst, self.tokens + (now - self._stamp) * self.rate)
        self._stamp = now
        self.tokens -= n
        return self.tokens >= 0
