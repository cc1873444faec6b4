"""Kubernetes REST paths -> (group, version, namespace, resource, name, subresource)."""

from __future__ import annotations

from dataclasses import dataclass

from . import errors
from .resources import Registry, ResourceType


@dataclass(frozen=True, slots=True)
class Target:
    rt: ResourceType
    namespace: str | None  # None: all namespaces (collection) or cluster-scoped
    name: str | None
    subresource: str | None
    legacy_watch: bool = False


@dataclass(frozen=True, slots=True)
class Discovery:
    kind: str  # "versions" | "groups" | "group" | "resources"
    group: str = ""
    version: str = ""


def parse_path(path: str, registry: Registry) -> Target | Discovery:
    segs = [s for s in path.split("/") if s]
    if not segs or segs[0] not in ("api", "apis"):
        raise errors.page_not_found()
    if segs[0] == "api":
        if len(segs) == 1:
            return Discovery("versions")
        group, version, rest = "", segs[1], segs[2:]
    else:
        if len(segs) == 1:
            return Discovery("groups")
        if len(segs) == 2:
            return Discovery("group", segs[1])
        group, version, rest = segs[1], segs[2], segs[3:]
    if not registry.has_group_version(group, version):
        raise errors.page_not_found()
    if not rest:
        return Discovery("resources", group, version)
    legacy_watch = False
    if rest[0] == "watch":
        # Deprecated /watch/ prefix, still served by kube-apiserver.
        legacy_watch, rest = True, rest[1:]
        if not rest:
            raise errors.page_not_found()
    namespace: str | None = None
    if rest[0] == "namespaces" and len(rest) >= 3:
        candidate = registry.find(group, version, rest[2])
        if candidate is not None and candidate.namespaced:
            namespace, rest = rest[1], rest[2:]
    rt = registry.find(group, version, rest[0])
    if rt is None or len(rest) > 3:
        raise errors.page_not_found()
    name = rest[1] if len(rest) > 1 else None
    sub = rest[2] if len(rest) > 2 else None
    if rt.namespaced and namespace is None and name is not None:
        raise errors.page_not_found()
    is_log = sub == "log" and rt.group == "" and rt.plural == "pods"
    if sub is not None and not (
        (sub == "status" and rt.has_status) or (sub == "scale" and rt.scale is not None) or is_log
    ):
        raise errors.page_not_found()
    return Target(rt, namespace, name, sub, legacy_watch)
