"""`python -m proxy` as a real process: SIGTERM drain under load (§2.11), 1 GB bodies
through a bounded-memory proxy (§2.6), TLS on the TLS port (§2.3)."""

from __future__ import annotations

import asyncio
import ssl
import subprocess
import sys
import time
from pathlib import Path

import pytest

from tests.support import ROOT, QueueProxySubprocess, RawConnection, get, http_request, raw_upstream, read_request_head

GIB = 1 << 30
RSS_LIMIT_KIB = 60 * 1024


async def ok_app(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
    while True:
        line, _headers, _ = await read_request_head(reader)
        if "/slow" in line:
            await asyncio.sleep(1.5)
        else:
            await asyncio.sleep(0.005)
        writer.write(b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\nok")
        await writer.drain()


@pytest.mark.slow
async def test_sigterm_under_steady_load_answers_every_accepted_request() -> None:
    async with raw_upstream(ok_app) as port:
        qp = QueueProxySubprocess(port, SLUICE_DRAIN_QUIET_PERIOD="1", CONTAINER_CONCURRENCY="5").start()
        statuses: list[int] = []
        refused = 0
        stop_at = time.monotonic() + 2.5

        async def client() -> None:
            nonlocal refused
            conn: RawConnection | None = None
            while time.monotonic() < stop_at:
                try:
                    if conn is None:
                        conn = await RawConnection.open(qp.port)
                    statuses.append((await conn.request(get("/"))).status)
                except ConnectionRefusedError:
                    refused += 1
                    await asyncio.sleep(0.01)
            if conn is not None:
                await conn.close()

        clients = [asyncio.create_task(client()) for _ in range(8)]
        await asyncio.sleep(0.8)
        qp.terminate()
        await asyncio.gather(*clients)
        # A request in flight when the quiet period ends is still answered.
        slow = asyncio.create_task(http_request(qp.port, get("/slow"), timeout=10))
        t0 = time.monotonic()
        code, err = await asyncio.to_thread(qp.wait, 30)
        elapsed = time.monotonic() - t0
        assert (await slow).status == 200
        assert code == 0, err
        assert statuses and set(statuses) == {200}, f"non-200 answers: {set(statuses)}"
        assert refused == 0  # still serving throughout the drain
        assert elapsed >= 1.0  # waited for the quiet period after the last request
        assert "received TERM signal" in err


async def test_probes_fail_after_sigterm_while_requests_still_work() -> None:
    async with raw_upstream(ok_app) as port:
        qp = QueueProxySubprocess(port, SLUICE_DRAIN_QUIET_PERIOD="2").start()
        qp.terminate()
        kubelet = get("/", {"User-Agent": "kube-probe/1.30", "K-Network-Probe": "queue"})
        for _ in range(100):  # until the signal has been handled
            probe = await http_request(qp.port, kubelet)
            if probe.status != 200:
                break
            await asyncio.sleep(0.05)
        assert (probe.status, probe.body) == (503, b"shutting down\n")
        assert (await http_request(qp.port, get("/"))).status == 200
        code, _ = await asyncio.to_thread(qp.wait, 20)
        assert code == 0


async def test_wait_for_drain_then_sigterm_exits_cleanly() -> None:
    async with raw_upstream(ok_app) as port:
        qp = QueueProxySubprocess(port, SLUICE_DRAIN_QUIET_PERIOD="1").start()
        waiter = asyncio.create_task(http_request(qp.admin_port, get("/wait-for-drain"), timeout=10))
        await asyncio.sleep(0.2)
        qp.terminate()  # kubelet: preStop, then SIGTERM
        assert (await waiter).status == 200
        code, _ = await asyncio.to_thread(qp.wait, 20)
        assert code == 0


def _peak_rss_kib(pid: int) -> int:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmHWM:"):
            return int(line.split()[1])
    return 0


@pytest.mark.slow
async def test_one_gib_upload_and_download_stay_under_60_mb() -> None:
    chunk = bytes(1 << 20)

    async def app(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        while True:
            line, headers, _ = await read_request_head(reader)
            if line.startswith("POST"):
                left = int(headers["content-length"])
                while left:
                    data = await reader.read(min(left, 1 << 20))
                    if not data:
                        return
                    left -= len(data)
                writer.write(b"HTTP/1.1 200 OK\r\nContent-Length: 8\r\n\r\nreceived")
            else:
                writer.write(b"HTTP/1.1 200 OK\r\nContent-Length: %d\r\n\r\n" % GIB)
                for _ in range(GIB // len(chunk)):
                    writer.write(chunk)
                    await writer.drain()
            await writer.drain()

    async with raw_upstream(app) as port:
        qp = QueueProxySubprocess(port).start()
        assert qp.proc is not None
        try:
            conn = await RawConnection.open(qp.port)
            await conn.send(b"POST /up HTTP/1.1\r\nHost: x\r\nContent-Length: %d\r\n\r\n" % GIB)
            for _ in range(GIB // len(chunk)):
                conn.writer.write(chunk)
                await conn.writer.drain()
            resp = await conn.read_responses(1, timeout=60)
            assert resp[0].body == b"received"

            await conn.send(get("/down"))
            head = await conn.reader.readuntil(b"\r\n\r\n")
            assert b"Content-Length: %d" % GIB in head
            got = 0
            while got < GIB:
                data = await asyncio.wait_for(conn.reader.read(1 << 20), 30)
                assert data
                got += len(data)
            assert got == GIB
            await conn.close()
            peak = _peak_rss_kib(qp.proc.pid)
            assert peak < RSS_LIMIT_KIB, f"peak RSS {peak} KiB"
        finally:
            qp.stop()


def _self_signed(tmp: Path) -> None:
    subprocess.run(
        [
            "openssl",
            "req",
            "-x509",
            "-newkey",
            "rsa:2048",
            "-nodes",
            "-days",
            "1",
            "-subj",
            "/CN=localhost",
            "-keyout",
            str(tmp / "tls.key"),
            "-out",
            str(tmp / "tls.crt"),
        ],
        check=True,
        capture_output=True,
    )


async def test_tls_port_serves_when_certificates_exist(tmp_path: Path) -> None:
    _self_signed(tmp_path)
    async with raw_upstream(ok_app) as port:
        qp = QueueProxySubprocess(port, SLUICE_CERT_DIR=str(tmp_path)).start()
        try:
            tls_port = int(qp.env["QUEUE_SERVING_TLS_PORT"])
            ctx = ssl.create_default_context()
            ctx.check_hostname = False
            ctx.verify_mode = ssl.CERT_NONE
            for _ in range(50):
                try:
                    reader, writer = await asyncio.open_connection("127.0.0.1", tls_port, ssl=ctx)
                    break
                except ConnectionRefusedError:
                    await asyncio.sleep(0.05)
            ssl_obj = writer.get_extra_info("ssl_object")
            assert ssl_obj is not None and ssl_obj.version() == "TLSv1.3"  # default minimum 1.3
            conn = RawConnection(reader, writer)
            resp = await conn.request(get("/"))
            assert (resp.status, resp.body) == (200, b"ok")
            await conn.close()
            # The plain-text port stays open.
            assert (await http_request(qp.port, get("/"))).status == 200
        finally:
            qp.stop()


async def test_no_tls_listener_without_certificates(tmp_path: Path) -> None:
    async with raw_upstream(ok_app) as port:
        qp = QueueProxySubprocess(port, SLUICE_CERT_DIR=str(tmp_path)).start()
        try:
            with pytest.raises(OSError):
                await asyncio.open_connection("127.0.0.1", int(qp.env["QUEUE_SERVING_TLS_PORT"]))
        finally:
            qp.stop()


async def test_busy_port_exits_non_zero_naming_it() -> None:
    async with raw_upstream(ok_app) as port:
        first = QueueProxySubprocess(port).start()
        try:
            second = QueueProxySubprocess(port, QUEUE_SERVING_PORT=str(first.port))
            second.proc = subprocess.Popen(
                [sys.executable, "-m", "proxy"],
                cwd=ROOT,
                env=second.env,
                stdout=subprocess.PIPE,
                stderr=subprocess.PIPE,
            )
            code, err = await asyncio.to_thread(second.wait, 20)
            assert code != 0
            assert str(first.port) in err and "address already in use" in err
        finally:
            first.stop()
