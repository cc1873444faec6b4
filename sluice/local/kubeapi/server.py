"""The aiohttp application: authentication, body limits, content types, and the verb dispatch.

Everything a client can get wrong is answered with a `Status` of the real server's shape:
400 for a body that does not parse (with the parser's message), 401 without the bearer token,
404 for unknown paths and objects, 405 for a verb a path does not take, 413 above the real
server's 3 MiB request limit, 415 for a patch type the resource does not accept.
"""

from __future__ import annotations

import asyncio
import hmac
import json
import logging
from collections.abc import Awaitable, Callable
from typing import Any

import yaml
from aiohttp import web

from . import discovery, errors, logs, openapi, views
from .errors import APIError
from .fields import WriteContext
from .ops import APPLY_PATCH, JSON_PATCH, MERGE_PATCH, STRATEGIC_PATCH, Operations
from .resources import ResourceType
from .routing import Discovery, Target, parse_path
from .store import Stored, Watcher, dumps
from .tables import table, table_version

log = logging.getLogger("sluice.kubeapi")

MAX_BODY = 3 * 1024 * 1024  # apiserver's maxRequestBodyBytes
PUBLIC_PATHS = frozenset({"/healthz", "/livez", "/readyz", "/version"})  # system:public-info-viewer
DEFAULT_WATCH_TIMEOUT = 1800.0  # the real server picks 30-60 min when the client sets none

Handler = Callable[[web.Request], Awaitable[web.StreamResponse]]


def _json_response(body: bytes | dict[str, Any], status: int = 200, ctx: WriteContext | None = None) -> web.Response:
    data = body if isinstance(body, bytes) else dumps(body)
    resp = web.Response(body=data, status=status, content_type="application/json")
    for w in ctx.warnings if ctx is not None else ():
        # RFC 7234 warn-code 299 with agent "-", as the real server sends warnings.
        resp.headers.add("Warning", '299 - "' + w.replace("\\", "\\\\").replace('"', '\\"') + '"')
    return resp


def status_response(err: APIError) -> web.Response:
    return _json_response(err.status(), err.code)


def render(rt: ResourceType, s: Stored) -> bytes:
    # Objects are stored at their storage version; a CR served at several versions (conversion
    # strategy None) differs only in apiVersion.
    if s.obj.get("apiVersion") == rt.api_version:
        return s.raw
    return dumps(served(rt, s))


def _bool(q: str | None) -> bool:
    return (q or "").lower() in ("true", "1")


def _int(request: web.Request, name: str) -> int | None:
    raw = request.query.get(name)
    if raw in (None, ""):
        return None
    try:
        return int(raw)
    except ValueError:
        raise errors.bad_request(f'invalid value for {name}: "{raw}"') from None


def served(rt: ResourceType, s: Stored) -> dict[str, Any]:
    if s.obj.get("apiVersion") == rt.api_version:
        return s.obj
    if rt.view_of is not None:
        return views.convert(rt, s.obj)
    return {**s.obj, "apiVersion": rt.api_version}


class KubeAPIApp:
    def __init__(
        self,
        ops: Operations,
        token: str,
        *,
        bookmark_interval: float = 60.0,
        server_address: str = "",
        pod_logs: Callable[[], logs.PodLogSource | None] = lambda: None,
    ) -> None:
        self.ops = ops
        self.pod_logs = pod_logs
        self.openapi = openapi.OpenAPI(ops.registry)
        self.token = token
        self.bookmark_interval = bookmark_interval
        self.server_address = server_address
        self._watch_tasks: set[asyncio.Task[Any]] = set()
        self._closing = asyncio.Event()

    def build(self) -> web.Application:
        app = web.Application(middlewares=[self._errors, self._auth], client_max_size=MAX_BODY + 1024)
        app.router.add_route("GET", "/version", self._version)
        for path in ("/healthz", "/livez", "/readyz"):
            app.router.add_route("GET", path, self._ok)
        app.router.add_route("*", "/api", self._dispatch)
        app.router.add_route("*", "/api/{tail:.*}", self._dispatch)
        app.router.add_route("*", "/apis", self._dispatch)
        app.router.add_route("*", "/apis/{tail:.*}", self._dispatch)
        app.router.add_route("GET", "/openapi/v3", self._openapi_v3)
        app.router.add_route("GET", "/openapi/v3/{tail:.*}", self._openapi_v3)
        app.router.add_route("*", "/{tail:.*}", self._not_found)
        return app

    def close_watches(self) -> None:
        self._closing.set()

    # ------------------------------------------------------------ middlewares

    @web.middleware
    async def _errors(self, request: web.Request, handler: Handler) -> web.StreamResponse:
        try:
            return await handler(request)
        except APIError as e:
            return status_response(e)
        except web.HTTPException as e:
            if e.status == 413:
                return status_response(errors.too_large(MAX_BODY))
            if e.status == 405:
                return status_response(errors.method_not_allowed())
            return status_response(APIError(e.status, e.reason.replace(" ", ""), e.text or e.reason))
        except (ConnectionResetError, asyncio.CancelledError):
            raise
        except Exception as e:
            log.exception("internal error serving %s %s", request.method, request.path)
            return status_response(APIError(500, "InternalError", f"Internal error occurred: {e}"))

    @web.middleware
    async def _auth(self, request: web.Request, handler: Handler) -> web.StreamResponse:
        if request.path not in PUBLIC_PATHS:
            header = request.headers.get("Authorization", "")
            scheme, _, given = header.partition(" ")
            if scheme.lower() != "bearer" or not hmac.compare_digest(given.strip().encode(), self.token.encode()):
                raise errors.unauthorized()
        return await handler(request)

    # ------------------------------------------------------------ plain endpoints

    async def _version(self, request: web.Request) -> web.StreamResponse:
        return _json_response(dict(discovery.version_info()))

    async def _ok(self, request: web.Request) -> web.StreamResponse:
        return web.Response(text="ok")

    async def _not_found(self, request: web.Request) -> web.StreamResponse:
        raise errors.page_not_found()

    async def _openapi_v3(self, request: web.Request) -> web.StreamResponse:
        path = request.path[len("/openapi/v3") :].strip("/")
        if not path:
            return _json_response(self.openapi.v3_index())
        doc = self.openapi.v3_document(path)
        if doc is None:
            raise errors.page_not_found()
        resp = _json_response(doc)
        # The index hands out hashed URLs: a document fetched by one may be cached for good.
        if request.query.get("hash"):
            resp.headers["Cache-Control"] = "public, immutable"
        return resp

    # ------------------------------------------------------------ bodies

    async def _read_body(self, request: web.Request) -> bytes:
        if request.content_length is not None and request.content_length > MAX_BODY:
            raise errors.too_large(MAX_BODY)
        data = await request.content.read(MAX_BODY + 1)
        if len(data) > MAX_BODY:
            raise errors.too_large(MAX_BODY)
        return data

    async def _decode(self, request: web.Request, allow_yaml: bool = True) -> Any:
        data = await self._read_body(request)
        ctype = request.content_type
        if not data.strip():
            raise errors.bad_request("the body of the request was empty")
        if ctype in ("application/yaml", "application/apply-patch+yaml") and allow_yaml:
            try:
                return yaml.safe_load(data)
            except yaml.YAMLError as e:
                raise errors.bad_request(f"yaml: {e}".replace("\n", " ")) from None
        try:
            return json.loads(data)
        except (ValueError, UnicodeDecodeError) as e:
            raise errors.bad_request(f"json parse error: {e}") from None

    async def _write_body(self, request: web.Request) -> Any:
        if request.content_type not in (
            "application/json",
            "application/yaml",
            "",
            "application/octet-stream",
        ):
            raise errors.unsupported_media_type(request.content_type, ["application/json", "application/yaml"])
        return await self._decode(request)

    async def _delete_options(self, request: web.Request) -> dict[str, Any]:
        opts: dict[str, Any] = {}
        data = await self._read_body(request)
        if data.strip():
            try:
                parsed = json.loads(data)
            except ValueError as e:
                raise errors.bad_request(f"json parse error: {e}") from None
            if isinstance(parsed, dict):
                opts.update(parsed)
        q = request.query
        if "propagationPolicy" in q:
            opts["propagationPolicy"] = q["propagationPolicy"]
        if "gracePeriodSeconds" in q:
            opts["gracePeriodSeconds"] = _int(request, "gracePeriodSeconds")
        if "orphanDependents" in q:
            opts["orphanDependents"] = _bool(q["orphanDependents"])
        return opts

    # ------------------------------------------------------------ dispatch

    async def _dispatch(self, request: web.Request) -> web.StreamResponse:
        if request.query.get("dryRun"):
            raise errors.bad_request("dryRun is not supported by the embedded API server")
        target = parse_path(request.path, self.ops.registry)
        if isinstance(target, Discovery):
            if request.method != "GET":
                raise errors.method_not_allowed()
            return self._discovery(target)
        method = request.method
        rt, ns, name, sub = target.rt, target.namespace or "", target.name, target.subresource
        if rt.view_of is not None and method != "GET":
            raise errors.method_not_allowed(f"{rt.group}/{rt.version} {rt.plural} is read-only here; write core/v1")
        if name is None:
            if method == "GET":
                if target.legacy_watch or _bool(request.query.get("watch")):
                    return await self._watch(request, target)
                return self._list(request, target)
            if method == "POST" and (target.namespace is not None or not rt.namespaced):
                ctx = WriteContext.parse(request.query.get("fieldValidation"))
                s = self.ops.create(rt, ns, await self._write_body(request), ctx)
                return _json_response(render(rt, s), 201, ctx)
            if method == "DELETE" and (target.namespace is not None or not rt.namespaced):
                return await self._delete_collection(request, target)
            raise errors.method_not_allowed()
        if sub == "scale":
            return await self._scale(request, rt, ns, name)
        if sub == "log":
            if method != "GET":
                raise errors.method_not_allowed()
            return await self._log(request, rt, ns, name)
        if method == "GET" and target.legacy_watch:
            return await self._watch(request, target)
        if method == "GET":
            s = self.ops.get(rt, ns, name)
            tv = table_version(request.headers.get("Accept", ""))
            if tv is not None:
                meta = {"resourceVersion": str(s.rv)}
                return _json_response(
                    table(rt, [served(rt, s)], tv, meta, request.query.get("includeObject", "PartialObjectMetadata"))
                )
            return _json_response(render(rt, s))
        if method == "PUT":
            ctx = WriteContext.parse(request.query.get("fieldValidation"))
            s, created = self.ops.update(rt, ns, name, await self._write_body(request), sub, ctx)
            return _json_response(render(rt, s), 201 if created else 200, ctx)
        if method == "PATCH" and request.content_type == APPLY_PATCH and sub is None:
            ctx = WriteContext.parse(request.query.get("fieldValidation"))
            s, created = self.ops.server_side_apply(rt, ns, name, await self._decode(request), ctx)
            return _json_response(render(rt, s), 201 if created else 200, ctx)
        if method == "PATCH":
            ctype = request.content_type
            if ctype not in (MERGE_PATCH, JSON_PATCH, STRATEGIC_PATCH):
                accepted = [JSON_PATCH, MERGE_PATCH, APPLY_PATCH] + ([STRATEGIC_PATCH] if rt.strategic_merge else [])
                raise errors.unsupported_media_type(ctype, accepted)
            ctx = WriteContext.parse(request.query.get("fieldValidation"))
            s = self.ops.patch(rt, ns, name, ctype, await self._decode(request, allow_yaml=False), sub, ctx)
            return _json_response(render(rt, s), 200, ctx)
        if method == "DELETE" and sub is None:
            s = self.ops.delete(rt, ns, name, await self._delete_options(request))
            return _json_response(render(rt, s))
        raise errors.method_not_allowed()

    def _discovery(self, d: Discovery) -> web.Response:
        reg = self.ops.registry
        if d.kind == "versions":
            return _json_response(discovery.api_versions(self.server_address))
        if d.kind == "groups":
            return _json_response(discovery.api_group_list(reg))
        body = (
            discovery.api_group(reg, d.group)
            if d.kind == "group"
            else discovery.api_resource_list(reg, d.group, d.version)
        )
        if body is None:
            raise errors.page_not_found()
        return _json_response(body)

    async def _scale(self, request: web.Request, rt: ResourceType, ns: str, name: str) -> web.Response:
        if request.method == "GET":
            return _json_response(self.ops.get_scale(rt, ns, name))
        if request.method == "PUT":
            return _json_response(self.ops.update_scale(rt, ns, name, await self._write_body(request)))
        if request.method == "PATCH":
            ctype = request.content_type
            if ctype not in (MERGE_PATCH, JSON_PATCH, STRATEGIC_PATCH):
                raise errors.unsupported_media_type(ctype, [JSON_PATCH, MERGE_PATCH, STRATEGIC_PATCH])
            body = await self._decode(request, allow_yaml=False)
            return _json_response(self.ops.patch_scale(rt, ns, name, ctype, body))
        raise errors.method_not_allowed()

    def _list(self, request: web.Request, target: Target) -> web.Response:
        rt = target.rt
        q = request.query
        limit = _int(request, "limit") or 0
        if limit < 0:
            raise errors.bad_request("limit must be non-negative")
        res = self.ops.list(
            rt,
            target.namespace,
            q.get("labelSelector", ""),
            q.get("fieldSelector", ""),
            limit,
            q.get("continue", ""),
        )
        meta: dict[str, Any] = {"resourceVersion": str(res.resource_version)}
        if res.continue_token:
            meta["continue"] = res.continue_token
        if res.remaining is not None:
            meta["remainingItemCount"] = res.remaining
        tv = table_version(request.headers.get("Accept", ""))
        if tv is not None:
            include = q.get("includeObject", "PartialObjectMetadata")
            return _json_response(table(rt, [served(rt, s) for s in res.items], tv, meta, include))
        head = dumps({"kind": rt.list_kind, "apiVersion": rt.api_version, "metadata": meta})
        body = b"".join((head[:-1], b',"items":[', b",".join(render(rt, s) for s in res.items), b"]}"))
        return _json_response(body)

    async def _delete_collection(self, request: web.Request, target: Target) -> web.Response:
        rt = target.rt
        opts = await self._delete_options(request)
        res = self.ops.list(
            rt,
            target.namespace,
            request.query.get("labelSelector", ""),
            request.query.get("fieldSelector", ""),
        )
        deleted = []
        for s in res.items:
            current = self.ops.store.get(rt.group_resource, s.meta.get("namespace", ""), s.meta["name"])
            if current is not None:
                deleted.append(self.ops.delete(rt, current.meta.get("namespace", ""), current.meta["name"], opts))
        head = dumps(
            {
                "kind": rt.list_kind,
                "apiVersion": rt.api_version,
                "metadata": {"resourceVersion": str(self.ops.store.rv)},
            }
        )
        return _json_response(b"".join((head[:-1], b',"items":[', b",".join(render(rt, s) for s in deleted), b"]}")))

    # ------------------------------------------------------------ watch

    async def _watch(self, request: web.Request, target: Target) -> web.StreamResponse:
        rt = target.rt
        q = request.query
        if target.name is not None:
            # A watch on a single object is a watch with a metadata.name field selector.
            fsel = ",".join(x for x in (q.get("fieldSelector", ""), f"metadata.name={target.name}") if x)
        else:
            fsel = q.get("fieldSelector", "")
        timeout = _int(request, "timeoutSeconds")
        bookmarks = _bool(q.get("allowWatchBookmarks"))
        initial_events = _bool(q.get("sendInitialEvents"))
        rv = "" if initial_events else q.get("resourceVersion", "")
        resp = web.StreamResponse(status=200, headers={"Content-Type": "application/json"})
        resp.enable_chunked_encoding()
        try:
            watcher: Watcher | None = self.ops.watch(rt, target.namespace, q.get("labelSelector", ""), fsel, rv)
        except APIError as e:
            if e.code != 410:
                raise
            # An expired resourceVersion is reported in-stream (HTTP 200 + ERROR event), as the
            # watch cache does; clients then relist.
            await resp.prepare(request)
            await resp.write(b'{"type":"ERROR","object":' + dumps(e.status()) + b"}\n")
            await resp.write_eof()
            return resp
        assert watcher is not None
        tv = table_version(request.headers.get("Accept", ""))
        include = q.get("includeObject", "PartialObjectMetadata")

        def line(kind: str, s: Stored) -> bytes:
            if tv is None:
                return self._event_line(rt, kind, s)
            obj = table(rt, [served(rt, s)], tv, {"resourceVersion": str(s.rv)}, include)
            return b'{"type":"' + kind.encode() + b'","object":' + dumps(obj) + b"}\n"

        await resp.prepare(request)
        loop = asyncio.get_running_loop()
        deadline = loop.time() + (timeout if timeout is not None and timeout > 0 else DEFAULT_WATCH_TIMEOUT)
        next_bookmark = loop.time() + self.bookmark_interval
        if initial_events:
            initial: list[bytes] = []
            while not watcher.queue.empty():
                item = watcher.queue.get_nowait()
                if item is not None:
                    initial.append(line(item[0], item[1]))
            initial.append(self._bookmark(rt, initial_end=True))
            await resp.write(b"".join(initial))
        closing = asyncio.ensure_future(self._closing.wait())
        try:
            while True:
                now = loop.time()
                if now >= deadline:
                    break
                wait = deadline - now
                if bookmarks:
                    wait = min(wait, max(0.0, next_bookmark - now))
                getter = asyncio.ensure_future(watcher.queue.get())
                done, _ = await asyncio.wait({getter, closing}, timeout=wait, return_when=asyncio.FIRST_COMPLETED)
                if getter not in done:
                    getter.cancel()
                    if closing in done:
                        break
                    if bookmarks and loop.time() >= next_bookmark and watcher.queue.empty():
                        await resp.write(self._bookmark(rt))
                        next_bookmark = loop.time() + self.bookmark_interval
                    continue
                item = getter.result()
                if item is None:
                    break
                lines = [line(item[0], item[1])]
                ended = False
                while not watcher.queue.empty():
                    more = watcher.queue.get_nowait()
                    if more is None:
                        ended = True
                        break
                    lines.append(line(more[0], more[1]))
                await resp.write(b"".join(lines))
                if ended:
                    break
        except (ConnectionResetError, ConnectionError):
            pass
        finally:
            closing.cancel()
            self.ops.store.unwatch(watcher)
        try:
            await resp.write_eof()
        except (ConnectionResetError, ConnectionError):
            pass
        return resp

    # ------------------------------------------------------------ pod logs

    async def _log(self, request: web.Request, rt: ResourceType, ns: str, name: str) -> web.StreamResponse:
        pod = self.ops.get(rt, ns, name).obj
        q = request.query
        container = logs.choose_container(pod, q.get("container", ""))
        previous = _bool(q.get("previous"))
        tail, limit = _int(request, "tailLines"), _int(request, "limitBytes")
        source = self.pod_logs()
        path = source.log_path(ns, name, container, previous) if source is not None else None
        if path is None or not path.exists():
            if previous:
                raise errors.bad_request(f'previous terminated container "{container}" in pod "{name}" not found')
            raise errors.bad_request(
                f'container "{container}" in pod "{name}" is waiting to start: {logs.waiting_reason(pod, container)}'
            )
        data, offset, inode = logs.read_initial(path, tail, limit)
        if not _bool(q.get("follow")) or previous:
            return web.Response(body=data, content_type="text/plain")
        resp = web.StreamResponse(status=200, headers={"Content-Type": "text/plain"})
        resp.enable_chunked_encoding()
        await resp.prepare(request)
        if data:
            await resp.write(data)
        store, uid = self.ops.store, pod["metadata"].get("uid")

        def alive() -> bool:
            current = store.get(rt.group_resource, ns, name)
            return (
                not self._closing.is_set()
                and current is not None
                and current.meta.get("uid") == uid
                and request.transport is not None
                and not request.transport.is_closing()
            )

        budget = None if limit is None else max(0, limit - len(data))
        try:
            await logs.follow(path, offset, inode, resp.write, alive, budget)
            await resp.write_eof()
        except (ConnectionResetError, ConnectionError):
            pass
        return resp

    @staticmethod
    def _event_line(rt: ResourceType, kind: str, s: Stored) -> bytes:
        return b'{"type":"' + kind.encode() + b'","object":' + render(rt, s) + b"}\n"

    def _bookmark(self, rt: ResourceType, initial_end: bool = False) -> bytes:
        meta: dict[str, Any] = {"resourceVersion": str(self.ops.store.rv)}
        if initial_end:
            meta["annotations"] = {"k8s.io/initial-events-end": "true"}
        obj = {"kind": rt.kind, "apiVersion": rt.api_version, "metadata": meta}
        return b'{"type":"BOOKMARK","object":' + dumps(obj) + b"}\n"


__all__ = ["APPLY_PATCH", "KubeAPIApp", "render", "status_response"]
