"""TTL rules of the online store: when a value is stale on read, and how long its key lives in Redis.

A read keeps a value while ``event >= now - ttl`` (the offline point-in-time join's rule); Redis
expiry only frees memory, a margin after that.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from features.online_views import OnlineView, WriteCounts, expiry_ms, write_rows
from features.packed_layout import PackedSchema, unpack_rows

HOUR_US = 3_600_000_000
NOW = 1_767_225_600_000_000  # 2026-01-01T00:00:00Z, microseconds
PROPERTY = settings(max_examples=200, deadline=None)
times_st = st.integers(-(2**60), 2**60)


def view(ttl_us: int) -> OnlineView:
    return OnlineView("customer_txn_24h", ("customer_id",), ("int",), PackedSchema(("amt",), ("float64",)), ttl_us)


# -- expiry_ms -----------------------------------------------------------------------------------


def test_no_ttl_never_expires() -> None:
    assert expiry_ms(np.array([0, NOW - 10**15, NOW]), 0, HOUR_US, NOW).tolist() == [0, 0, 0]


def test_stale_rows_get_minus_one() -> None:
    ttl = 24 * HOUR_US
    assert expiry_ms(np.array([NOW - ttl - 1, NOW - 2 * ttl, -(10**15)]), ttl, HOUR_US, NOW).tolist() == [-1, -1, -1]


def test_the_margin_is_added_to_the_time_left() -> None:
    ttl = 24 * HOUR_US
    event = np.array([NOW, NOW - ttl + 5_000, NOW + HOUR_US])  # fresh, 5 ms left, from the future
    got = expiry_ms(event, ttl, HOUR_US, NOW)
    assert got.tolist() == [(ttl + HOUR_US) // 1000, 5 + 3_600_000, (ttl + 2 * HOUR_US) // 1000]
    assert expiry_ms(event, ttl, 0, NOW).tolist() == [ttl // 1000, 5, (ttl + HOUR_US) // 1000]


def test_one_millisecond_left_is_kept() -> None:
    ttl = HOUR_US
    assert expiry_ms(np.array([NOW - ttl + 1_000]), ttl, 0, NOW).tolist() == [1]


@pytest.mark.parametrize("left_us", [0, 1, 999])
def test_a_value_exactly_ttl_old_is_still_written(left_us: int) -> None:
    ttl = 24 * HOUR_US
    event = np.array([NOW - ttl + left_us])
    assert not view(ttl).stale(event, NOW).any()
    assert expiry_ms(event, ttl, HOUR_US, NOW).tolist() == [1 + HOUR_US // 1000]
    assert expiry_ms(event, ttl, 0, NOW).tolist() == [1]  # 0 would mean "never expires" to the script


@PROPERTY
@given(event=times_st, ttl=st.integers(1, 2**50), margin=st.integers(0, 2**40), at=times_st)
def test_written_rows_are_live_and_stale_rows_are_not_written(event: int, ttl: int, margin: int, at: int) -> None:
    [got] = expiry_ms(np.array([event]), ttl, margin, at).tolist()
    [stale] = view(ttl).stale(np.array([event]), at).tolist()
    if stale:
        assert got == -1
    if got != -1:
        assert not stale
        assert got >= 1 + margin // 1000  # never 0: the write script reads 0 as "no expiry"
        assert got * 1000 <= event + ttl - at + margin + 1000  # nor outlives TTL + margin (to the ms)


# -- OnlineView.stale ----------------------------------------------------------------------------


def test_stale_boundaries() -> None:
    ttl = 24 * HOUR_US
    events = np.array([NOW - ttl - 1, NOW - ttl, NOW - ttl + 1, NOW, NOW + HOUR_US])
    assert view(ttl).stale(events, NOW).tolist() == [True, False, False, False, False]


def test_without_ttl_nothing_is_stale() -> None:
    assert view(0).stale(np.array([-(2**62), 0, NOW]), NOW).tolist() == [False, False, False]


@PROPERTY
@given(event=times_st, ttl=st.integers(1, 2**50), now=times_st)
def test_stale_is_the_negation_of_the_offline_join_rule(event: int, ttl: int, now: int) -> None:
    assert view(ttl).stale(np.array([event]), now).tolist() == [not event >= now - ttl]


# -- write_rows ----------------------------------------------------------------------------------


class FakeRedis:
    """In-memory stand-in for RedisOnline.write_newest: records the call, answers given statuses."""

    def __init__(self, statuses: Sequence[int]) -> None:
        self.statuses = statuses
        self.calls: list[tuple[list[bytes], list[bytes], list[int]]] = []

    def write_newest(self, keys: Sequence[bytes], values: Sequence[bytes], expiry: np.ndarray) -> np.ndarray:
        self.calls.append((list(keys), list(values), expiry.tolist()))
        return np.array(self.statuses, dtype=np.int8)


def test_write_rows_sends_only_live_rows_and_counts_statuses() -> None:
    ttl = 24 * HOUR_US
    v = view(ttl)
    ids = [b"customer_id=%d" % i for i in range(5)]
    event = np.array([NOW, NOW - ttl - 1, NOW - 1, NOW - 2, NOW - 3])
    fake = FakeRedis([1, 0, 2, -1])

    counts = write_rows(fake, b"tm:", v, ids, event, None, [np.arange(5.0)], [None],  # type: ignore[arg-type]
                        margin_us=HOUR_US, at_us=NOW)

    [(keys, values, expiry)] = fake.calls
    assert keys == [b"tm:{customer_id=%d}:customer_txn_24h" % i for i in (0, 2, 3, 4)]
    assert unpack_rows(v.schema, values, keys).columns[0].tolist() == [0.0, 2.0, 3.0, 4.0]
    assert expiry[0] == (ttl + HOUR_US) // 1000
    assert counts == WriteCounts(written=1, unchanged=1, skipped_older=1, expired=1, refused=1,
                                 refused_keys=[b"tm:{customer_id=4}:customer_txn_24h"])
    assert counts.rows == 5


def test_write_rows_with_only_stale_rows_sends_nothing() -> None:
    fake = FakeRedis([])
    counts = write_rows(fake, b"tm:", view(HOUR_US), [b"customer_id=1"], np.array([NOW - 2 * HOUR_US]),  # type: ignore[arg-type]
                        None, [np.array([1.0])], [None], margin_us=0, at_us=NOW)
    assert fake.calls == [] and counts == WriteCounts(expired=1)
