"""Sample app for `sluice local`, like Knative's autoscale-go sample (stdlib only).

GET /?sleep=<ms>&prime=<n>&bloat=<MiB>  sleeps, computes the largest prime below n (CPU), and
allocates MiB of memory, then answers with what it did and which revision served it.
GET /?crash=1 exits the process at once (for crash tests); GET /healthz answers 200.

Listens on 127.0.0.1:$PORT (Knative sets PORT; the queue-proxy reaches the app on 127.0.0.1).
"""

from __future__ import annotations

import math
import os
import sys
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from urllib.parse import parse_qs, urlsplit


def largest_prime_below(n: int) -> int:
    for candidate in range(n - 1, 1, -1):
        if all(candidate % d for d in range(2, math.isqrt(candidate) + 1)):
            return candidate
    return 0


class Handler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"
    # The handler writes headers and body separately: with Nagle on, the body waits ~40 ms
    # for the peer's delayed ACK (seen as a 140 ms mode in the locust load test).
    disable_nagle_algorithm = True

    def do_GET(self) -> None:
        url = urlsplit(self.path)
        if url.path == "/healthz":
            self._reply(200, "ok\n")
            return
        query = {k: v[-1] for k, v in parse_qs(url.query).items()}
        if query.get("crash"):
            os._exit(3)
        parts = []
        try:
            sleep_ms = int(query.get("sleep", "0"))
            prime = int(query.get("prime", "0"))
            bloat = int(query.get("bloat", "0"))
        except ValueError:
            self._reply(400, "sleep, prime and bloat must be integers\n")
            return
        if sleep_ms > 0:
            time.sleep(sleep_ms / 1000)
            parts.append(f"Slept for {sleep_ms} milliseconds.")
        if prime > 0:
            parts.append(f"The largest prime less than {prime} is {largest_prime_below(prime)}.")
        if bloat > 0:
            block = bytearray(bloat * 1024 * 1024)
            for i in range(0, len(block), 4096):
                block[i] = 1
            parts.append(f"Allocated {bloat} Mb of memory.")
            del block
        parts.append(f"Revision: {os.environ.get('K_REVISION', 'unknown')}.")
        self._reply(200, " ".join(parts) + "\n")

    def _reply(self, status: int, text: str) -> None:
        body = text.encode()
        self.send_response(status)
        self.send_header("Content-Type", "text/plain; charset=utf-8")
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def log_message(self, format: str, *args: object) -> None:
        return


class Server(ThreadingHTTPServer):
    daemon_threads = True
    # Read by server_activate() at bind time (assigning it afterwards leaves the backlog at 5).
    request_queue_size = 1024


def main() -> None:
    port = int(os.environ.get("PORT", "8080"))
    host = os.environ.get("HOST", "127.0.0.1")
    server = Server((host, port), Handler)
    print(f"autoscale sample listening on {host}:{port}", file=sys.stderr, flush=True)
    try:
        server.serve_forever(poll_interval=0.1)
    except KeyboardInterrupt:
        pass


if __name__ == "__main__":
    main()
