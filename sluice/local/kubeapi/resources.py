"""The resource registry: which group/version/plural the server serves and how each behaves.

Built-in kinds are declared here; custom resources come from CRD files (`crd.py`). A
`ResourceType` carries exactly the facts the real server derives from a kind's REST strategy:
scope, subresources, whether `metadata.generation` is tracked, whether PUT may create, and the
strategic-merge capability (built-ins only: the real server answers 415 for CRs).
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass, field
from typing import Any

from .schema import Schema

ALL_VERBS = ("create", "delete", "deletecollection", "get", "list", "patch", "update", "watch")


@dataclass(frozen=True, slots=True)
class ScalePaths:
    """Where the `/scale` subresource reads and writes (CRD `subresources.scale`)."""

    spec_replicas: str = ".spec.replicas"
    status_replicas: str = ".status.replicas"
    label_selector: str | None = ".status.selector"
    # Deployments expose a metav1.LabelSelector object at spec.selector, serialised to a string.
    selector_is_object: bool = False


@dataclass(frozen=True, slots=True)
class ResourceType:
    group: str
    version: str
    plural: str
    kind: str
    namespaced: bool = True
    singular: str = ""
    short_names: tuple[str, ...] = ()
    categories: tuple[str, ...] = ()
    has_status: bool = False
    scale: ScalePaths | None = None
    tracks_generation: bool = False
    allow_create_on_update: bool = False
    # The real CR strategy refuses a PUT without metadata.resourceVersion (AllowUnconditionalUpdate).
    allow_unconditional_update: bool = True
    custom: bool = False
    schema: Schema | None = None
    # Namespaces and Services are DNS-1123 labels; most other kinds are DNS-1123 subdomains.
    name_is_dns_label: bool = False
    extra_field_selectors: tuple[str, ...] = ()
    # Kinds whose main-resource create resets status to this (e.g. pods start Pending).
    initial_status: dict[str, Any] | None = field(default=None, hash=False, compare=False)
    # Top-level fields of a built-in kind besides apiVersion/kind/metadata (strict field
    # validation checks these; built-ins carry no schema here). Empty: not checked.
    top_fields: tuple[str, ...] = ()
    # A read-only view of another resource's objects (events.k8s.io/v1 events are core events).
    view_of: tuple[str, str] | None = None
    # A CRD version's additionalPrinterColumns (what `kubectl get` shows, see tables.py).
    printer_columns: tuple[dict[str, Any], ...] = field(default=(), hash=False, compare=False)

    @property
    def api_version(self) -> str:
        return f"{self.group}/{self.version}" if self.group else self.version

    @property
    def group_resource(self) -> tuple[str, str]:
        """Where the objects are stored (a view reads another resource's storage)."""
        return self.view_of or (self.group, self.plural)

    @property
    def list_kind(self) -> str:
        return self.kind + "List"

    @property
    def strategic_merge(self) -> bool:
        return not self.custom


def _core(plural: str, kind: str, **kw: Any) -> ResourceType:
    return ResourceType("", "v1", plural, kind, singular=kind.lower(), **kw)


_EVENT_FIELDS = (
    "involvedObject.kind",
    "involvedObject.namespace",
    "involvedObject.name",
    "involvedObject.uid",
    "involvedObject.apiVersion",
    "involvedObject.resourceVersion",
    "involvedObject.fieldPath",
    "reason",
    "reportingComponent",
    "source",
    "type",
)

BUILTIN_TYPES: tuple[ResourceType, ...] = (
    _core(
        "namespaces",
        "Namespace",
        top_fields=("spec", "status"),
        namespaced=False,
        short_names=("ns",),
        has_status=True,
        name_is_dns_label=True,
        initial_status={"phase": "Active"},
    ),
    _core(
        "pods",
        "Pod",
        top_fields=("spec", "status"),
        short_names=("po",),
        has_status=True,
        categories=("all",),
        extra_field_selectors=(
            "spec.nodeName",
            "spec.restartPolicy",
            "spec.schedulerName",
            "spec.serviceAccountName",
            "status.phase",
            "status.podIP",
            "status.nominatedNodeName",
        ),
        initial_status={"phase": "Pending"},
    ),
    _core(
        "services",
        "Service",
        top_fields=("spec", "status"),
        short_names=("svc",),
        has_status=True,
        allow_create_on_update=True,
        name_is_dns_label=True,
        categories=("all",),
        initial_status={"loadBalancer": {}},
    ),
    _core("endpoints", "Endpoints", short_names=("ep",), allow_create_on_update=True, top_fields=("subsets",)),
    _core("configmaps", "ConfigMap", short_names=("cm",), top_fields=("data", "binaryData", "immutable")),
    _core(
        "secrets",
        "Secret",
        extra_field_selectors=("type",),
        top_fields=("data", "stringData", "type", "immutable"),
    ),
    _core(
        "events",
        "Event",
        short_names=("ev",),
        allow_create_on_update=True,
        top_fields=(
            "involvedObject",
            "reason",
            "message",
            "source",
            "firstTimestamp",
            "lastTimestamp",
            "count",
            "type",
            "eventTime",
            "series",
            "action",
            "related",
            "reportingComponent",
            "reportingInstance",
        ),
        extra_field_selectors=_EVENT_FIELDS,
    ),
    _core(
        "serviceaccounts",
        "ServiceAccount",
        short_names=("sa",),
        top_fields=("secrets", "imagePullSecrets", "automountServiceAccountToken"),
    ),
    ResourceType(
        "apps",
        "v1",
        "deployments",
        "Deployment",
        top_fields=("spec", "status"),
        singular="deployment",
        short_names=("deploy",),
        categories=("all",),
        has_status=True,
        scale=ScalePaths(label_selector=".spec.selector", selector_is_object=True),
        tracks_generation=True,
        initial_status={},
    ),
    ResourceType(
        "apps",
        "v1",
        "replicasets",
        "ReplicaSet",
        top_fields=("spec", "status"),
        singular="replicaset",
        short_names=("rs",),
        categories=("all",),
        has_status=True,
        scale=ScalePaths(label_selector=".spec.selector", selector_is_object=True),
        tracks_generation=True,
        initial_status={},
    ),
    ResourceType(
        "discovery.k8s.io",
        "v1",
        "endpointslices",
        "EndpointSlice",
        singular="endpointslice",
        top_fields=("addressType", "endpoints", "ports"),
        allow_create_on_update=True,
    ),
    ResourceType(
        "coordination.k8s.io",
        "v1",
        "leases",
        "Lease",
        singular="lease",
        allow_create_on_update=True,
        top_fields=("spec",),
    ),
    ResourceType(
        "events.k8s.io",
        "v1",
        "events",
        "Event",
        singular="event",
        view_of=("", "events"),
        extra_field_selectors=_EVENT_FIELDS,
    ),
)


class UnknownResource(LookupError):
    pass


class Registry:
    """Served resource types, indexed the ways the URL space and discovery need them."""

    def __init__(self, types: Iterable[ResourceType] = ()) -> None:
        self._by_gvr: dict[tuple[str, str, str], ResourceType] = {}
        # Objects are stored once per group/resource whatever version they are served at.
        self._storage: dict[tuple[str, str], ResourceType] = {}
        for t in types:
            self.add(t)

    def add(self, t: ResourceType) -> None:
        self._by_gvr[(t.group, t.version, t.plural)] = t
        self._storage.setdefault(t.group_resource, t)

    def lookup(self, group: str, version: str, plural: str) -> ResourceType:
        try:
            return self._by_gvr[(group, version, plural)]
        except KeyError:
            raise UnknownResource(f"{group}/{version}/{plural}") from None

    def find(self, group: str, version: str, plural: str) -> ResourceType | None:
        return self._by_gvr.get((group, version, plural))

    def storage_type(self, group: str, plural: str) -> ResourceType | None:
        return self._storage.get((group, plural))

    def by_kind(self, api_version: str, kind: str) -> ResourceType | None:
        group, _, version = api_version.rpartition("/")
        for t in self._by_gvr.values():
            if t.group == group and t.version == version and t.kind == kind:
                return t
        return None

    def types(self) -> list[ResourceType]:
        return list(self._by_gvr.values())

    def storage_types(self) -> list[ResourceType]:
        return list(self._storage.values())

    def group_versions(self) -> dict[str, list[str]]:
        """group -> served versions, in registration order (the first is preferred)."""
        out: dict[str, list[str]] = {}
        for t in self._by_gvr.values():
            versions = out.setdefault(t.group, [])
            if t.version not in versions:
                versions.append(t.version)
        return out

    def has_group_version(self, group: str, version: str) -> bool:
        return any(t.group == group and t.version == version for t in self._by_gvr.values())


def default_registry() -> Registry:
    return Registry(BUILTIN_TYPES)
