"""Read-only views: one stored object served under another group's shape.

events.k8s.io/v1 Events are core/v1 Events renamed (k8s.io/kubernetes pkg/apis/events/v1
conversion): involvedObject → regarding, message → note, source → deprecatedSource,
first/lastTimestamp and count → deprecated*, reportingComponent → reportingController.
"""

from __future__ import annotations

from typing import Any

from .meta import JSONObj
from .resources import ResourceType

_EVENTS_V1 = {
    "involvedObject": "regarding",
    "message": "note",
    "source": "deprecatedSource",
    "firstTimestamp": "deprecatedFirstTimestamp",
    "lastTimestamp": "deprecatedLastTimestamp",
    "count": "deprecatedCount",
    "reportingComponent": "reportingController",
}


def convert(rt: ResourceType, obj: JSONObj) -> dict[str, Any]:
    if rt.view_of == ("", "events") and rt.group == "events.k8s.io":
        out = {_EVENTS_V1.get(k, k): v for k, v in obj.items()}
        out["apiVersion"] = rt.api_version
        return out
    return {**obj, "apiVersion": rt.api_version}
