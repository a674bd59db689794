"""Unit and property tests for sticky canary routing (serving/routing.py): pure, no I/O."""

from __future__ import annotations

import hashlib
import itertools
import math
import time

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from serving.routing import BUCKETS, _splitmix64, bucket, to_challenger

MASK = (1 << 64) - 1
INT64 = st.integers(-(2**63), 2**63 - 1)
CANARY_IDS = st.text(max_size=40)
WEIGHTS = st.floats(0, 100, allow_nan=False)
N_KEYS = 200_000


def reference_bucket(key: int | str, canary_id: str) -> int:
    """The module docstring's formula, in plain Python integers: what someone reproduces offline."""

    def u64(data: bytes) -> int:
        return int.from_bytes(hashlib.blake2b(data, digest_size=8).digest(), "little")

    z = (u64(key.encode()) if isinstance(key, str) else key & MASK) ^ u64(canary_id.encode())
    z = (z + 0x9E3779B97F4A7C15) & MASK
    z = ((z ^ (z >> 30)) * 0xBF58476D1CE4E5B9) & MASK
    z = ((z ^ (z >> 27)) * 0x94D049BB133111EB) & MASK
    return (z ^ (z >> 31)) % 10_000


def many_keys(seed: int, consecutive: bool) -> np.ndarray:
    """200k customer ids: random int64s, or a run of consecutive ids (how databases hand them out)."""
    rng = np.random.default_rng(seed)
    if consecutive:
        return np.arange(N_KEYS, dtype=np.int64) + int(rng.integers(0, 2**40))
    return rng.integers(-(2**63), 2**63 - 1, size=N_KEYS, dtype=np.int64)


def test_splitmix64_matches_the_published_test_vector():
    # splitmix64 seeded with 0 returns 0xE220A8397B1DCDAF first (Vigna's splitmix64.c).
    assert int(_splitmix64(np.zeros(1, dtype=np.uint64))[0]) == 0xE220A8397B1DCDAF


def test_pinned_buckets_keep_the_formula_from_changing_silently():
    # Changing these breaks stickiness for every running canary and every offline replay.
    keys = np.array([0, 1, 42, 123456789, -1, 2**63 - 1, -(2**63)], dtype=np.int64)
    assert bucket(keys, "fraud-detector:v7").tolist() == [6395, 6835, 5392, 8931, 3773, 2503, 6043]
    assert bucket(np.array(["alice", "bob", ""]), "fraud-detector:v7").tolist() == [5383, 4120, 6966]
    assert bucket(np.array([42]), "other").tolist() == [2812]
    assert [reference_bucket(int(k), "fraud-detector:v7") for k in keys] == [6395, 6835, 5392, 8931, 3773, 2503, 6043]


@given(st.lists(INT64, max_size=50), CANARY_IDS)
def test_integer_keys_follow_the_documented_formula(keys, canary_id):
    out = bucket(np.array(keys, dtype=np.int64), canary_id)
    assert out.dtype == np.int64
    assert out.tolist() == [reference_bucket(k, canary_id) for k in keys]


@given(st.lists(st.text(max_size=20), max_size=30), CANARY_IDS)
def test_string_keys_follow_the_documented_formula(keys, canary_id):
    as_array = np.array(keys, dtype=object)
    expected = [reference_bucket(k, canary_id) for k in keys]
    assert bucket(as_array, canary_id).tolist() == expected
    if keys and not any(k.endswith("\x00") for k in keys):  # numpy's str dtype drops trailing NULs
        assert bucket(np.array(keys, dtype=str), canary_id).tolist() == expected


@given(st.lists(st.integers(0, 2**31 - 1), min_size=1, max_size=50), CANARY_IDS)
def test_the_bucket_depends_on_the_key_value_not_on_its_container(keys, canary_id):
    expected = bucket(np.array(keys, dtype=np.int64), canary_id)
    for same in (keys, np.array(keys, dtype=np.int32), np.array(keys, dtype=np.uint64),
                 np.array(keys, dtype=object), np.array(keys, dtype=np.int64)[::-1][::-1]):
        assert np.array_equal(bucket(same, canary_id), expected)
    assert np.array_equal(bucket(np.array(keys).reshape(1, -1), canary_id), expected.reshape(1, -1))


@settings(max_examples=25, deadline=None)
@given(st.integers(0, 2**32), st.booleans(), CANARY_IDS, WEIGHTS)
def test_routing_is_deterministic_and_in_range(seed, consecutive, canary_id, weight):
    keys = many_keys(seed, consecutive)[:10_000]
    first = bucket(keys, canary_id)
    assert first.min() >= 0 and first.max() < BUCKETS
    assert np.array_equal(bucket(keys.copy(), canary_id), first)
    assert np.array_equal(to_challenger(keys, canary_id, weight), to_challenger(keys, canary_id, weight))


@settings(max_examples=50, deadline=None)
@given(st.lists(WEIGHTS, min_size=2, max_size=5), CANARY_IDS, st.integers(0, 2**32))
def test_raising_the_weight_only_adds_keys(weights, canary_id, seed):
    keys = many_keys(seed, consecutive=False)[:20_000]
    previous = np.zeros(len(keys), dtype=bool)
    for weight in sorted(weights):
        chosen = to_challenger(keys, canary_id, weight)
        assert not (previous & ~chosen).any()  # nobody on the challenger goes back
        previous = chosen


def test_the_rollout_steps_nest_and_the_ends_are_exact():
    keys = many_keys(7, consecutive=True)
    steps = [to_challenger(keys, "canary-7", w) for w in (0, 5, 25, 50, 100)]
    assert not steps[0].any() and steps[-1].all()
    for smaller, larger in itertools.pairwise(steps):
        assert (larger[smaller]).all()
    assert to_challenger(np.arange(3), "x", 0.0).dtype == np.bool_


@settings(max_examples=25, deadline=None)
@given(st.integers(0, 2**32), st.booleans(), CANARY_IDS, WEIGHTS)
def test_the_challenger_share_is_the_weight_within_half_a_point(seed, consecutive, canary_id, weight):
    # The binomial standard deviation at 200k keys is at most 0.11 points: 0.5 is 4.5 sigma.
    share = to_challenger(many_keys(seed, consecutive), canary_id, weight).mean() * 100
    assert abs(share - weight) <= 0.5


@settings(max_examples=15, deadline=None)
@given(st.integers(0, 2**32), st.booleans(), CANARY_IDS, CANARY_IDS)
def test_another_canary_id_draws_an_independent_split(seed, consecutive, first_id, second_id):
    if first_id == second_id:
        second_id += "'"
    keys = many_keys(seed, consecutive)
    a, b = to_challenger(keys, first_id, 25), to_challenger(keys, second_id, 25)
    assert abs((a & b).mean() * 100 - 6.25) <= 0.5  # independent: 25 % of 25 %


@pytest.mark.parametrize("weight", [-0.01, 100.01, math.nan, math.inf, True, "50"])
def test_a_weight_outside_0_to_100_is_refused(weight):
    with pytest.raises(ValueError, match="weight_pct"):
        to_challenger(np.arange(3), "c", weight)


def test_the_weight_resolution_is_a_hundredth_of_a_point():
    keys = np.arange(N_KEYS, dtype=np.int64)
    assert np.array_equal(to_challenger(keys, "c", 12.34), bucket(keys, "c") < 1234)
    assert np.array_equal(to_challenger(keys, "c", np.float32(50)), bucket(keys, "c") < 5000)


@pytest.mark.parametrize("keys", [np.array([1.0, 2.0]), np.array([True, False]), np.array([1, None], dtype=object),
                                  np.array(["a", math.nan], dtype=object)])
def test_keys_that_are_neither_integers_nor_strings_are_refused(keys):
    with pytest.raises(TypeError, match="routing key"):
        bucket(keys, "c")


def test_ten_thousand_keys_route_in_well_under_a_millisecond():
    keys = np.random.default_rng(0).integers(0, 2**40, size=10_000, dtype=np.int64)
    to_challenger(keys, "warm-up", 25)
    best = math.inf
    for _ in range(20):
        started = time.perf_counter()
        to_challenger(keys, "canary-1", 25)
        best = min(best, time.perf_counter() - started)
    assert best < 0.020  # typically ~0.1 ms; generous for a loaded CI machine
