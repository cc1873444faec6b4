"""Security, bad input, concurrency, persistence across restarts, the standalone process, kubectl."""

from __future__ import annotations

import asyncio
import json
import os
import shutil
import signal
import subprocess
import sys
from pathlib import Path
from typing import Any

import aiohttp
import pytest
import yaml
from kubernetes_asyncio.client.exceptions import ApiException

from sluice.local.kubeapi import EmbeddedAPIServer, kube_client_from_kubeconfig

from .conftest import CRD_DIR, PA_GROUP, PA_PLURAL, PA_VERSION, REPO_ROOT, client, client_ssl, pa_body, watch


async def raw(
    server: EmbeddedAPIServer,
    method: str,
    path: str,
    body: bytes | None = None,
    ctype: str = "application/json",
    token: str | None = "default",
) -> tuple[int, dict[str, Any]]:
    headers = {"Content-Type": ctype}
    if token is not None:
        headers["Authorization"] = f"Bearer {server.token if token == 'default' else token}"
    async with (
        aiohttp.ClientSession() as s,
        s.request(method, server.url + path, data=body, headers=headers, ssl=client_ssl(server)) as r,
    ):
        return r.status, json.loads(await r.read())


async def test_requests_without_the_token_get_401(server: EmbeddedAPIServer) -> None:
    for token in (None, "wrong"):
        code, st = await raw(server, "GET", "/api/v1/namespaces", token=token)
        assert (code, st["kind"], st["reason"], st["code"]) == (401, "Status", "Unauthorized", 401)
    code, _ = await raw(server, "GET", "/version", token=None)
    assert code == 200


async def test_listens_on_loopback_and_kubeconfig_has_token(server: EmbeddedAPIServer, kubeconfig: Path) -> None:
    assert server.url.startswith("https://127.0.0.1:")
    cfg = yaml.safe_load(await asyncio.to_thread(kubeconfig.read_text))
    # A file, not inline data: kubernetes-asyncio would copy inline data to a temporary file.
    assert await asyncio.to_thread(Path(cfg["clusters"][0]["cluster"]["certificate-authority"]).is_file)
    assert cfg["clusters"][0]["cluster"]["server"] == server.url
    assert cfg["users"][0]["user"]["token"] == server.token
    assert cfg["contexts"][0]["context"]["namespace"] == "default"
    assert ((await asyncio.to_thread(kubeconfig.stat)).st_mode & 0o777) == 0o600


async def test_malformed_json_and_yaml_are_400(server: EmbeddedAPIServer) -> None:
    code, st = await raw(server, "POST", "/api/v1/namespaces/default/configmaps", b'{"metadata": ')
    assert (code, st["reason"]) == (400, "BadRequest") and "json parse error" in st["message"]
    code, st = await raw(server, "POST", "/api/v1/namespaces/default/configmaps", b"a: [b\n", "application/yaml")
    assert (code, st["reason"]) == (400, "BadRequest") and st["message"].startswith("yaml:")
    code, st = await raw(
        server,
        "POST",
        "/api/v1/namespaces/default/configmaps",
        b"metadata:\n  name: from-yaml\ndata:\n  k: v\n",
        "application/yaml",
    )
    assert code == 201 and st["data"] == {"k": "v"}
    code, st = await raw(
        server, "PATCH", "/api/v1/namespaces/default/configmaps/from-yaml", b"{", "application/merge-patch+json"
    )
    assert code == 400


async def test_unknown_resource_is_404_with_the_real_shape(server: EmbeddedAPIServer) -> None:
    for path in ("/api/v1/namespaces/default/widgets", "/apis/nope.io/v1/things", "/api/v2/pods", "/bogus"):
        code, st = await raw(server, "GET", path)
        assert (code, st["reason"], st["message"]) == (
            404,
            "NotFound",
            "the server could not find the requested resource",
        )
        assert st["details"] == {}


async def test_oversized_body_is_413(server: EmbeddedAPIServer) -> None:
    big = json.dumps({"metadata": {"name": "big"}, "data": {"k": "x" * (3 * 1024 * 1024)}}).encode()
    code, st = await raw(server, "POST", "/api/v1/namespaces/default/configmaps", big)
    assert (code, st["code"], st["reason"]) == (413, 413, "RequestEntityTooLarge")
    code, _ = await raw(server, "GET", "/api/v1/namespaces/default/configmaps/big")
    assert code == 404


async def test_wrong_method_and_patch_type(server: EmbeddedAPIServer) -> None:
    code, st = await raw(server, "POST", "/api/v1/namespaces/default/configmaps/x", b"{}")
    assert (code, st["reason"]) == (405, "MethodNotAllowed")
    await raw(server, "POST", "/api/v1/namespaces/default/configmaps", b'{"metadata":{"name":"x"}}')
    code, st = await raw(server, "PATCH", "/api/v1/namespaces/default/configmaps/x", b"{}", "text/plain")
    assert (code, st["reason"]) == (415, "UnsupportedMediaType")


async def test_optimistic_concurrency_under_concurrent_writers(api: Any) -> None:
    """Read-modify-write with retry on 409: no increment may be lost."""
    v1 = client.CoreV1Api(api)
    await v1.create_namespaced_config_map("default", {"metadata": {"name": "counter"}, "data": {"n": "0"}})
    conflicts = 0

    async def writer(times: int) -> None:
        nonlocal conflicts
        for _ in range(times):
            while True:
                cm = await v1.read_namespaced_config_map("counter", "default")
                cm.data["n"] = str(int(cm.data["n"]) + 1)
                await asyncio.sleep(0)
                try:
                    await v1.replace_namespaced_config_map("counter", "default", cm)
                    break
                except ApiException as e:
                    assert e.status == 409
                    conflicts += 1

    await asyncio.gather(*(writer(10) for _ in range(6)))
    assert (await v1.read_namespaced_config_map("counter", "default")).data["n"] == "60"
    assert conflicts > 0  # the writers really raced


async def test_restart_with_data_dir_loses_nothing(tmp_path: Path) -> None:
    data = tmp_path / "state"
    srv = EmbeddedAPIServer(data_dir=data, crd_paths=[CRD_DIR])
    await srv.start()
    api = await kube_client_from_kubeconfig(srv.write_kubeconfig(tmp_path / "kc"))
    v1 = client.CoreV1Api(api)
    await v1.create_namespaced_config_map("default", {"metadata": {"name": "kept"}, "data": {"a": "1"}})
    pa = await client.CustomObjectsApi(api).create_namespaced_custom_object(
        PA_GROUP, PA_VERSION, "default", PA_PLURAL, pa_body("rev")
    )
    await v1.create_namespaced_config_map("default", {"metadata": {"name": "deleted"}})
    await v1.delete_namespaced_config_map("deleted", "default")
    last_rv = int((await v1.list_namespaced_config_map("default")).metadata.resource_version)
    token, port = srv.token, srv.port
    await api.close()
    await srv.stop()

    srv2 = EmbeddedAPIServer(data_dir=data, crd_paths=[CRD_DIR], port=port)
    await srv2.start()
    try:
        assert srv2.token == token  # existing kubeconfigs keep working
        api = await kube_client_from_kubeconfig(tmp_path / "kc")
        v1 = client.CoreV1Api(api)
        assert (await v1.read_namespaced_config_map("kept", "default")).data == {"a": "1"}
        with pytest.raises(ApiException):
            await v1.read_namespaced_config_map("deleted", "default")
        got = await client.CustomObjectsApi(api).get_namespaced_custom_object(
            PA_GROUP, PA_VERSION, "default", PA_PLURAL, "rev"
        )
        assert got["metadata"]["uid"] == pa["metadata"]["uid"]
        new = await v1.create_namespaced_config_map("default", {"metadata": {"name": "new"}})
        assert int(new.metadata.resource_version) > last_rv  # the counter never goes backwards
        # History does not survive a restart: resuming from before it is 410, from now works.
        w = watch.Watch()
        with pytest.raises(ApiException) as ei:
            async for _ in w.stream(
                v1.list_namespaced_config_map, "default", resource_version=str(last_rv - 1), timeout_seconds=2
            ):
                pass
        assert ei.value.status == 410
        await w.close()
        await api.close()
    finally:
        await srv2.stop()


def _free_port() -> int:
    import socket

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port: int = s.getsockname()[1]
        return port


async def _wait_for(path: Path, proc: asyncio.subprocess.Process) -> None:
    for _ in range(200):
        if await asyncio.to_thread(path.exists):
            return
        assert proc.returncode is None, "the server exited early"
        await asyncio.sleep(0.05)
    raise AssertionError("kubeconfig never written")


@pytest.fixture
async def standalone(tmp_path: Path) -> Any:
    kc = tmp_path / "kubeconfig"
    proc = await asyncio.create_subprocess_exec(
        sys.executable,
        "-m",
        "sluice.local.kubeapi",
        "--port",
        str(_free_port()),
        "--data-dir",
        str(tmp_path / "data"),
        "--kubeconfig",
        str(kc),
        "--crd",
        str(CRD_DIR),
        cwd=REPO_ROOT,
        stderr=subprocess.DEVNULL,
    )
    try:
        await _wait_for(kc, proc)
        yield kc, proc
    finally:
        if proc.returncode is None:
            proc.send_signal(signal.SIGTERM)
            await asyncio.wait_for(proc.wait(), 10)


async def test_standalone_process_serves_kubernetes_asyncio(standalone: Any) -> None:
    kc, proc = standalone
    api = await kube_client_from_kubeconfig(kc)
    created = await client.CoreV1Api(api).create_namespaced_config_map("default", {"metadata": {"name": "x"}})
    assert created.metadata.uid
    await api.close()
    proc.send_signal(signal.SIGTERM)
    assert await asyncio.wait_for(proc.wait(), 10) == 0


@pytest.mark.skipif(shutil.which("kubectl") is None, reason="kubectl not installed")
async def test_kubectl_uses_the_kubeconfig_unchanged(standalone: Any, tmp_path: Path) -> None:
    kc, _ = standalone
    env = {**os.environ, "KUBECONFIG": str(kc), "HOME": str(tmp_path)}

    async def kubectl(*args: str, stdin: bytes | None = None) -> str:
        p = await asyncio.create_subprocess_exec(
            "kubectl", *args, env=env, stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=subprocess.PIPE
        )
        out, err = await asyncio.wait_for(p.communicate(stdin), 30)
        assert p.returncode == 0, err.decode()
        return out.decode()

    manifest = yaml.safe_dump(pa_body("from-kubectl")).encode()
    await kubectl("create", "--validate=false", "-f", "-", stdin=manifest)
    out = await kubectl("get", "kpa", "-o", "json")
    assert [i["metadata"]["name"] for i in json.loads(out)["items"]] == ["from-kubectl"]
    # (`kubectl create configmap` would send protobuf, which this server does not decode: see README.)
    cm = {"apiVersion": "v1", "kind": "ConfigMap", "metadata": {"name": "cm"}, "data": {"a": "b"}}
    await kubectl("create", "--validate=false", "-f", "-", stdin=json.dumps(cm).encode())
    out = await kubectl("get", "configmaps", "cm", "-o", "jsonpath={.data.a}")
    assert out == "b"
    await kubectl("delete", "configmap", "cm")
    out = await kubectl("get", "namespaces", "-o", "name")
    assert "namespace/default" in out.split()
