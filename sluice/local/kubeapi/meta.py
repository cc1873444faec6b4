"""ObjectMeta helpers: timestamps, uids, and the name/label rules the real server validates."""

from __future__ import annotations

import re
import secrets
import string
import uuid
from datetime import UTC, datetime
from typing import Any

from .errors import Cause

JSONObj = dict[str, Any]

_DNS1123_LABEL = re.compile(r"^[a-z0-9]([-a-z0-9]*[a-z0-9])?$")
_DNS1123_SUBDOMAIN = re.compile(r"^[a-z0-9]([-a-z0-9]*[a-z0-9])?(\.[a-z0-9]([-a-z0-9]*[a-z0-9])?)*$")
_LABEL_NAME = re.compile(r"^([A-Za-z0-9][-A-Za-z0-9_.]*)?[A-Za-z0-9]$")
_LABEL_VALUE = re.compile(r"^(([A-Za-z0-9][-A-Za-z0-9_.]*)?[A-Za-z0-9])?$")

# Fields of metav1.ObjectMeta: the server decodes `metadata` into that struct, so anything else
# a client sends there is dropped (pruned) for every kind, custom resources included.
OBJECT_META_FIELDS = frozenset(
    {
        "name",
        "generateName",
        "namespace",
        "selfLink",
        "uid",
        "resourceVersion",
        "generation",
        "creationTimestamp",
        "deletionTimestamp",
        "deletionGracePeriodSeconds",
        "labels",
        "annotations",
        "ownerReferences",
        "finalizers",
        "managedFields",
    }
)
# Fields only the server sets; a client's values are replaced (uid, creationTimestamp) or
# checked (resourceVersion) rather than trusted.
SYSTEM_FIELDS = ("uid", "creationTimestamp", "deletionTimestamp", "deletionGracePeriodSeconds", "generation")


def now_rfc3339() -> str:
    # metav1.Time marshals at second precision in UTC with a literal Z.
    return datetime.now(UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


def new_uid() -> str:
    return str(uuid.uuid4())


def generate_name_suffix() -> str:
    # names.SimpleNameGenerator: 5 random lowercase alphanumerics, no vowels in real k8s;
    # vowel-free avoids accidental words, which we keep.
    alphabet = "bcdfghjklmnpqrstvwxz2456789"
    return "".join(secrets.choice(alphabet) for _ in range(5))


def validate_name(name: Any, dns_label: bool) -> list[Cause]:
    if not isinstance(name, str) or not name:
        return [Cause("FieldValueRequired", "Required value: name or generateName is required", "metadata.name")]
    if dns_label:
        if len(name) > 63 or not _DNS1123_LABEL.match(name):
            return [
                Cause(
                    "FieldValueInvalid",
                    f'Invalid value: "{name}": a lowercase RFC 1123 label must consist of lower case '
                    "alphanumeric characters or '-', and must start and end with an alphanumeric "
                    "character (e.g. 'my-name',  or '123-abc', regex used for validation is "
                    "'[a-z0-9]([-a-z0-9]*[a-z0-9])?')",
                    "metadata.name",
                )
            ]
        return []
    if len(name) > 253 or not _DNS1123_SUBDOMAIN.match(name):
        return [
            Cause(
                "FieldValueInvalid",
                f'Invalid value: "{name}": a lowercase RFC 1123 subdomain must consist of lower case '
                "alphanumeric characters, '-' or '.', and must start and end with an alphanumeric "
                "character (e.g. 'example.com', regex used for validation is "
                "'[a-z0-9]([-a-z0-9]*[a-z0-9])?(\\.[a-z0-9]([-a-z0-9]*[a-z0-9])?)*')",
                "metadata.name",
            )
        ]
    return []


def _validate_qualified_name(key: str, fld: str) -> list[Cause]:
    prefix, _, name = key.rpartition("/")
    ok = bool(name) and len(name) <= 63 and _LABEL_NAME.match(name) is not None
    if prefix and (len(prefix) > 253 or not _DNS1123_SUBDOMAIN.match(prefix)):
        ok = False
    if ok:
        return []
    return [
        Cause(
            "FieldValueInvalid",
            f"Invalid value: \"{key}\": name part must consist of alphanumeric characters, '-', '_' "
            "or '.', and must start and end with an alphanumeric character",
            fld,
        )
    ]


def validate_meta(meta: JSONObj) -> list[Cause]:
    """Label and annotation checks every kind gets from ValidateObjectMeta."""
    causes: list[Cause] = []
    labels = meta.get("labels")
    if labels is not None:
        if not isinstance(labels, dict):
            causes.append(Cause("FieldValueTypeInvalid", "Invalid value: must be a map", "metadata.labels"))
        else:
            for k, v in labels.items():
                causes += _validate_qualified_name(k, "metadata.labels")
                if not isinstance(v, str) or len(v) > 63 or not _LABEL_VALUE.match(v):
                    causes.append(
                        Cause(
                            "FieldValueInvalid",
                            f'Invalid value: "{v}": a valid label must be an empty string or consist of '
                            "alphanumeric characters, '-', '_' or '.', and must start and end with an "
                            "alphanumeric character",
                            "metadata.labels",
                        )
                    )
    ann = meta.get("annotations")
    if ann is not None:
        if not isinstance(ann, dict) or not all(isinstance(v, str) for v in ann.values()):
            causes.append(
                Cause("FieldValueTypeInvalid", "Invalid value: must be a map of strings", "metadata.annotations")
            )
        else:
            for k in ann:
                causes += _validate_qualified_name(k, "metadata.annotations")
    for key in ("finalizers",):
        val = meta.get(key)
        if val is not None and (not isinstance(val, list) or not all(isinstance(x, str) for x in val)):
            causes.append(Cause("FieldValueTypeInvalid", "Invalid value: must be a list of strings", f"metadata.{key}"))
    refs = meta.get("ownerReferences")
    if refs is not None:
        if not isinstance(refs, list):
            causes.append(Cause("FieldValueTypeInvalid", "Invalid value: must be a list", "metadata.ownerReferences"))
        else:
            for i, ref in enumerate(refs):
                for req in ("apiVersion", "kind", "name", "uid"):
                    if not isinstance(ref, dict) or not ref.get(req):
                        causes.append(
                            Cause("FieldValueRequired", "Required value", f"metadata.ownerReferences[{i}].{req}")
                        )
    return causes


def random_token() -> str:
    alphabet = string.ascii_letters + string.digits
    return "".join(secrets.choice(alphabet) for _ in range(48))
