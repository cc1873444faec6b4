"""A real gRPC server (grpcio, threads) with raw-bytes methods: no protoc, no protobuf.

Methods of service `test.Echo` (request/response messages are plain bytes):
- Unary: echoes the request; `sleep:<s>` sleeps first; `abort:<code>` aborts with that status
  and a message; every reply carries the trailing metadata `x-trailer: done`.
- ServerStream: request `<n>` → n messages `msg-<i>`.
- ClientStream: the requests concatenated.
- Bidi: each request echoed as it arrives.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Iterator
from concurrent import futures
from typing import Any

import grpc  # type: ignore[import-untyped]

SERVICE = "test.Echo"


class EchoState:
    """What the server saw, for assertions (active calls, cancellations)."""

    def __init__(self) -> None:
        self.lock = threading.Lock()
        self.active = 0
        self.max_active = 0
        self.cancelled = 0
        self.calls = 0
        self.metadata: list[tuple[tuple[str, str], ...]] = []

    def enter(self, context: Any) -> None:
        with self.lock:
            self.active += 1
            self.calls += 1
            self.max_active = max(self.max_active, self.active)
            self.metadata.append(tuple(context.invocation_metadata()))

    def leave(self, context: Any) -> None:
        with self.lock:
            self.active -= 1
            if not context.is_active() and context.code() is None:
                self.cancelled += 1


def _unary(state: EchoState) -> Any:
    def handler(request: bytes, context: Any) -> bytes:
        state.enter(context)
        try:
            context.set_trailing_metadata((("x-trailer", "done"),))
            if request.startswith(b"sleep:"):
                deadline = time.monotonic() + float(request[6:])
                while time.monotonic() < deadline and context.is_active():
                    time.sleep(0.01)
                if not context.is_active():
                    with state.lock:
                        state.cancelled += 1
            if request.startswith(b"abort:"):
                code = getattr(grpc.StatusCode, request[6:].decode())
                context.abort(code, "aborted as asked")
            return request
        finally:
            with state.lock:
                state.active -= 1

    return handler


def _server_stream(state: EchoState) -> Any:
    def handler(request: bytes, context: Any) -> Iterator[bytes]:
        state.enter(context)
        try:
            count, _, size = request.partition(b"x")
            payload = b"z" * int(size) if size else b""
            for i in range(int(count)):
                yield b"msg-%d" % i + payload
        finally:
            with state.lock:
                state.active -= 1

    return handler


def _client_stream(state: EchoState) -> Any:
    def handler(requests: Iterator[bytes], context: Any) -> bytes:
        state.enter(context)
        try:
            return b"".join(requests)
        finally:
            with state.lock:
                state.active -= 1

    return handler


def _bidi(state: EchoState) -> Any:
    def handler(requests: Iterator[bytes], context: Any) -> Iterator[bytes]:
        state.enter(context)
        try:
            yield from requests
        finally:
            with state.lock:
                state.active -= 1

    return handler


def start_server(port: int = 0, workers: int = 16) -> tuple[Any, int, EchoState]:
    """A running grpc.Server on 127.0.0.1 (insecure, i.e. h2c) and what it saw."""
    state = EchoState()
    handlers = {
        "Unary": grpc.unary_unary_rpc_method_handler(_unary(state)),
        "ServerStream": grpc.unary_stream_rpc_method_handler(_server_stream(state)),
        "ClientStream": grpc.stream_unary_rpc_method_handler(_client_stream(state)),
        "Bidi": grpc.stream_stream_rpc_method_handler(_bidi(state)),
    }
    server = grpc.server(futures.ThreadPoolExecutor(max_workers=workers))
    server.add_generic_rpc_handlers((grpc.method_handlers_generic_handler(SERVICE, handlers),))
    bound = server.add_insecure_port(f"127.0.0.1:{port}")
    server.start()
    return server, int(bound), state


def method(name: str) -> str:
    return f"/{SERVICE}/{name}"
