"""Key -> bucket hashing (CONTRACT.md §4.10), against Knative's own test vectors (pkg/hash)."""

from __future__ import annotations

import pytest

from autoscaler.bucket import UNIVERSE, BucketSet, _build_hashes, bucket_name, bucket_names, choose_subset, fnv1a_64


@pytest.mark.parametrize(
    ("data", "digest"),
    [(b"", 0xCBF29CE484222325), (b"a", 0xAF63DC4C8601EC8C), (b"foobar", 0x85944171F73967E8)],
)
def test_fnv1a_64_reference_vectors(data: bytes, digest: int) -> None:
    assert fnv1a_64(data) == digest


PLANETS = ["sun", "moon", "mars", "mercury"]


@pytest.mark.parametrize(
    ("target", "n", "want"),
    [
        # knative.dev/pkg hash_test.go TestChooseSubset
        ("a target!", 4, {"sun", "moon", "mars", "mercury"}),
        ("a target!", 2, {"mercury", "moon"}),
        ("something else entirely", 2, {"mercury", "mars"}),
        ("something else entirely", 3, {"mars", "mercury", "sun"}),
    ],
)
def test_choose_subset_matches_go(target: str, n: int, want: set[str]) -> None:
    assert choose_subset(PLANETS, n, target) == want


def test_collision_is_resolved_like_go() -> None:
    # knative.dev/pkg TestCollisionHandling: these two keys land on the same point for the target.
    key1 = "b08006d4-81f9-42ee-808b-ea18a39cbd83"
    key2 = "c9dc8df4-8c8d-4077-8750-6d2c2113a23b"
    target = "e68a64e1-19d8-4855-9ffa-04f49223a059"
    assert fnv1a_64((key1 + target).encode()) % UNIVERSE == fnv1a_64((key2 + target).encode()) % UNIVERSE
    hd = _build_hashes([key1, key2], target)
    assert len(hd.name_lookup) == 2 and hd.hash_pool == sorted(hd.hash_pool)


def test_bucket_names() -> None:
    assert bucket_name(0, 1) == "autoscaler-bucket-00-of-01"
    assert bucket_names(10)[-1] == "autoscaler-bucket-09-of-10"


def test_owner_is_stable_total_and_spread() -> None:
    one = BucketSet.of_size(1)
    assert one.owner("ns/rev") == "autoscaler-bucket-00-of-01"
    buckets = BucketSet.of_size(3)
    keys = [f"ns/rev-{i}" for i in range(300)]
    owners = [buckets.owner(k) for k in keys]
    # independent of the order names are given in (the set is sorted)
    assert owners == [BucketSet(reversed(bucket_names(3))).owner(k) for k in keys]
    counts = {b: owners.count(b) for b in bucket_names(3)}
    assert all(60 <= c <= 140 for c in counts.values()), counts
    assert buckets.has(owners[0], keys[0]) and sum(buckets.has(b, keys[0]) for b in bucket_names(3)) == 1
