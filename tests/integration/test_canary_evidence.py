"""Canary evidence: replicas add counts to one Redis hash; nothing is lost while Redis is down."""

from __future__ import annotations

import numpy as np
import pytest
import redis

from serving.canary_evidence import LATENCY_BOUNDS, SCORE_EDGES, EvidenceRecorder, read_step
from tests.integration.redis_servers import RedisProc

pytestmark = pytest.mark.integration


def _client(url: str) -> redis.Redis:
    return redis.Redis.from_url(url, socket_timeout=0.2, socket_connect_timeout=0.2)


def test_two_replicas_sum_and_each_step_keeps_its_own_counts(redis_proc: RedisProc):
    a, b = (EvidenceRecorder(_client(redis_proc.url), "m") for _ in range(2))
    a.record("c1", 1, "champion", rows=3, seconds=0.0004, scores=np.array([0.0005, 0.03, 0.9]))
    b.record("c1", 1, "champion", rows=2, seconds=0.002, scores=np.array([0.0005, 0.6]))
    b.record("c1", 1, "challenger", rows=1, errors=1)
    assert a.flush() and b.flush()
    counts = read_step(_client(redis_proc.url), "m", "c1", 1)
    assert (counts["champion"].requests, counts["champion"].errors) == (5, 0)
    assert counts["challenger"].errors == 1
    expected = np.bincount(np.searchsorted(SCORE_EDGES, [0.0005, 0.03, 0.9, 0.0005, 0.6], side="right"),
                           minlength=len(SCORE_EDGES) + 1)
    np.testing.assert_array_equal(counts["champion"].score_counts, expected)
    lat = counts["champion"].latency_counts
    assert lat.sum() == 2 and lat[np.searchsorted(LATENCY_BOUNDS, 0.002)] == 1
    a.record("c1", 2, "champion", rows=7)
    a.record("c1", 1, "shadow", rows=1)    # a late call that still carries step 1: counted there
    a.record("c1", 2, "champion", rows=0, errors=0)
    assert a.flush()
    assert read_step(_client(redis_proc.url), "m", "c1", 1)["shadow"].requests == 1
    assert read_step(_client(redis_proc.url), "m", "c1", 2)["champion"].requests == 7


def test_counts_survive_redis_being_down(redis_proc: RedisProc):
    recorder = EvidenceRecorder(_client(redis_proc.url), "m")
    recorder.record("c1", 1, "challenger", rows=4)
    redis_proc.stop()
    assert recorder.flush() is False
    recorder.record("c1", 1, "challenger", rows=1)
    redis_proc.restart()
    assert recorder.flush() is True
    assert read_step(_client(redis_proc.url), "m", "c1", 1)["challenger"].requests == 5
