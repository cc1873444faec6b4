"""HA bucketing (CONTRACT.md §4.10; Knative `pkg/hash/hash.go`, `serving/pkg/autoscaler/bucket`).

Keys "<ns>/<name>" map to buckets `autoscaler-bucket-<ii>-of-<nn>` with Knative's consistent
subset choice: FNV-1a 64 points on a ring of 2048. Replicas (Go and Sluice alike) must agree on
the owner of every key, so this is a byte-for-byte port.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from dataclasses import dataclass

__all__ = [
    "BucketSet",
    "bucket_name",
    "bucket_names",
    "choose_subset",
    "fnv1a_64",
]

_FNV_OFFSET = 0xCBF29CE484222325
_FNV_PRIME = 0x100000001B3
_MASK = (1 << 64) - 1

START_SALT = "start-angle-salt"
STEP_SALT = "step-angle-salt"
UNIVERSE = 1 << 11  # 2048 points


def fnv1a_64(data: bytes) -> int:
    h = _FNV_OFFSET
    for b in data:
        h = ((h ^ b) * _FNV_PRIME) & _MASK
    return h


def bucket_name(ordinal: int, total: int) -> str:
    """Lease / Service / EndpointSlice name of bucket `ordinal` (0-based) of `total`."""
    return f"autoscaler-bucket-{ordinal:02d}-of-{total:02d}".lower()


def bucket_names(total: int) -> list[str]:
    return [bucket_name(i, total) for i in range(total)]


@dataclass(frozen=True, slots=True)
class _HashData:
    name_lookup: dict[int, str]
    hash_pool: list[int]  # sorted points
    start: int
    step: int


def _build_hashes(names: Sequence[str], target: str) -> _HashData:
    t = target.encode()
    start = fnv1a_64(t + START_SALT.encode()) % UNIVERSE
    step = fnv1a_64(t + STEP_SALT.encode()) % UNIVERSE
    lookup: dict[int, str] = {}
    pool: list[int] = []
    for name in names:
        buf = name.encode() + t
        h = fnv1a_64(buf)
        point = h % UNIVERSE
        # On a collision, feed the previous full hash (lower-case hex) as salt and rehash.
        while point in lookup:
            buf += format(h, "x").encode()
            h = fnv1a_64(buf)
            point = h % UNIVERSE
        pool.append(point)
        lookup[point] = name
    pool.sort()
    return _HashData(lookup, pool, start, step)


def choose_subset(names: Sequence[str], n: int, target: str) -> set[str]:
    """Consistently picks `n` of `names` for `target` (Knative `hash.ChooseSubset`)."""
    if n >= len(names):
        return set(names)
    hd = _build_hashes(names, target)
    pool = hd.hash_pool
    selected: set[int] = set()
    angle = hd.start
    while len(selected) < n:
        root = _first_at_or_after(pool, angle)
        while root in selected:
            root = (root + 1) % len(pool)
        selected.add(root)
        angle = (angle + hd.step) % UNIVERSE
    return {hd.name_lookup[pool[i]] for i in selected}


def _first_at_or_after(pool: list[int], angle: int) -> int:
    lo, hi = 0, len(pool)
    while lo < hi:
        mid = (lo + hi) // 2
        if pool[mid] >= angle:
            hi = mid
        else:
            lo = mid + 1
    return 0 if lo == len(pool) else lo  # wrap around


class BucketSet:
    """The buckets of this deployment; `owner(key)` is the bucket that handles a key."""

    def __init__(self, names: Iterable[str]) -> None:
        self.names = sorted(set(names))
        self._cache: dict[str, str] = {}

    @classmethod
    def of_size(cls, total: int) -> BucketSet:
        return cls(bucket_names(total))

    def owner(self, key: str) -> str:
        owner = self._cache.get(key)
        if owner is None:
            (owner,) = choose_subset(self.names, 1, key)
            self._cache[key] = owner
        return owner

    def has(self, bucket: str, key: str) -> bool:
        return self.owner(key) == bucket
