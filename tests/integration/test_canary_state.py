"""The canary state (serving/canary_state.py) in a real redis-server: round trips, compare-and-set,
the read cache, and what a replica does when Redis is down, hung or holds garbage."""

from __future__ import annotations

import json
import logging
import threading
import time
import uuid
from collections.abc import Iterator
from dataclasses import asdict, replace
from datetime import UTC

import pytest
import redis
from hypothesis import given, settings
from hypothesis import strategies as st
from redis.cluster import RedisCluster

from serving.canary_state import MODES, CanaryState, CanaryStateStore
from serving.errors import CanaryConflictError, CanaryStateError
from tests.integration.redis_servers import RedisProc

pytestmark = pytest.mark.integration

TIMEOUT_S = 0.05
LOGGER = "serving.canary_state"


def client(url: str) -> redis.Redis:
    return redis.Redis.from_url(url, socket_timeout=TIMEOUT_S, socket_connect_timeout=TIMEOUT_S)


@pytest.fixture
def model() -> str:
    """A model name no other test uses, so tests can share the session's Redis."""
    return f"fraud-{uuid.uuid4().hex[:10]}"


@pytest.fixture
def shared(redis_url: str) -> Iterator[redis.Redis]:
    conn = client(redis_url)
    yield conn
    conn.close()


def canary(model: str, weight: float = 5.0, step: int = 1) -> CanaryState:
    return CanaryState(model=model, mode="canary", weight_pct=weight, champion_version="3", challenger_version="4",
                       canary_id=f"{model}:4", step=step, started_at="2026-11-21T09:00:00+00:00",
                       step_started_at="2026-11-21T09:30:00Z")


def warnings_in(caplog: pytest.LogCaptureFixture) -> list[logging.LogRecord]:
    return [r for r in caplog.records if r.name == LOGGER and r.levelno == logging.WARNING]


# -- the state record (no Redis) -----------------------------------------------------------------

optional_text = st.none() | st.text(min_size=1, max_size=12)
utc_times = st.none() | st.datetimes(timezones=st.just(UTC)).map(lambda t: t.isoformat())


@settings(max_examples=50)
@given(st.sampled_from(MODES), st.floats(0, 100), optional_text, st.text(min_size=1, max_size=12),
       st.integers(0, 10**6), utc_times, utc_times, st.integers(0, 2**53))
def test_every_valid_state_survives_json(mode, weight, champion, challenger, step, started, step_started, revision):
    state = CanaryState(model="fraud-detector", mode=mode, weight_pct=weight, champion_version=champion,
                        challenger_version=challenger, canary_id=f"c-{challenger}", step=step, started_at=started,
                        step_started_at=step_started, revision=revision)
    assert CanaryState.from_json(state.to_json()) == state
    assert CanaryState.from_json(state.to_json().encode()) == state


def test_off_routes_nothing_to_a_challenger():
    off = CanaryState.off("fraud-detector")
    assert (off.mode, off.weight_pct, off.challenger_version, off.revision) == ("off", 0.0, None, 0)
    assert CanaryState.from_json(off.to_json()) == off


def _edited(**changes: object) -> str:
    return json.dumps({**asdict(canary("m")), **changes})


@pytest.mark.parametrize("raw, why", [
    (b"not json", "not JSON"),
    (b"\xff\xfe", "not JSON"),
    (b"[1, 2]", "list, not an object"),
    (json.dumps({k: v for k, v in asdict(canary("m")).items() if k != "step"}), "missing fields \\['step'\\]"),
    (_edited(sticky_salt="x"), "unknown fields \\['sticky_salt'\\]"),
    (_edited(mode="blue"), "unknown mode 'blue'"),
    (_edited(weight_pct=100.5), "weight_pct"),
    (_edited(weight_pct="5"), "weight_pct"),
    (_edited(revision=-1), "revision"),
    (_edited(step=True), "step"),
    (_edited(started_at="2026-11-21T09:00:00"), "started_at must be a UTC"),
    (_edited(started_at="2026-11-21T09:00:00+02:00"), "started_at must be a UTC"),
    (_edited(challenger_version=None), "needs a challenger_version"),
    (_edited(model=""), "model"),
])
def test_malformed_states_are_refused_with_a_reason(raw, why):
    with pytest.raises(CanaryStateError, match=why):
        CanaryState.from_json(raw)


# -- reads and writes ----------------------------------------------------------------------------

def test_nothing_stored_reads_as_off_and_is_not_degraded(shared, model):
    assert CanaryStateStore(shared, model).read() == (CanaryState.off(model), False)


def test_a_write_is_what_every_replica_reads_with_its_revision(redis_url, shared, model):
    controller = CanaryStateStore(shared, model)
    first = controller.write(canary(model, weight=5.0), expected_revision=0)
    assert first == replace(canary(model, weight=5.0), revision=1)
    assert controller.read() == (first, False)  # the writer sees its own write at once
    replica = CanaryStateStore(client(redis_url), model)
    assert replica.read() == (first, False)
    second = controller.write(canary(model, weight=25.0, step=2), expected_revision=first.revision)
    assert (second.revision, second.weight_pct) == (2, 25.0)
    replica.invalidate()
    assert replica.read() == (second, False)
    assert json.loads(shared.get(controller.key))["revision"] == 2


def test_a_stale_revision_loses_the_compare_and_set(redis_url, shared, model):
    a, b = CanaryStateStore(shared, model), CanaryStateStore(client(redis_url), model)
    assert a.read()[0].revision == b.read()[0].revision == 0
    won = a.write(canary(model, weight=5.0), expected_revision=0)
    with pytest.raises(CanaryConflictError, match="expected revision 0, stored revision 1") as caught:
        b.write(canary(model, weight=50.0), expected_revision=0)
    assert (caught.value.expected_revision, caught.value.stored_revision) == (0, 1)
    b.invalidate()
    assert b.read() == (won, False)  # the loser changed nothing
    assert b.write(canary(model, weight=50.0), expected_revision=1).revision == 2


def test_of_many_simultaneous_writers_exactly_one_wins(redis_url, model):
    stores = [CanaryStateStore(client(redis_url), model) for _ in range(8)]
    outcomes: list[str] = []
    start = threading.Barrier(len(stores))

    def attempt(i: int) -> None:
        start.wait()
        try:
            stores[i].write(canary(model, weight=float(i)), expected_revision=0)
            outcomes.append(f"won {i}")
        except CanaryConflictError:
            outcomes.append("conflict")

    threads = [threading.Thread(target=attempt, args=(i,)) for i in range(len(stores))]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    winners = [o for o in outcomes if o.startswith("won")]
    assert len(winners) == 1 and outcomes.count("conflict") == len(stores) - 1
    stored, degraded = CanaryStateStore(client(redis_url), model).read()
    assert (stored.revision, stored.weight_pct, degraded) == (1, float(winners[0].split()[1]), False)


def test_a_write_for_another_model_or_a_negative_revision_is_refused(shared, model):
    store = CanaryStateStore(shared, model)
    with pytest.raises(CanaryStateError, match="Use a CanaryStateStore for that model"):
        store.write(canary("someone-else"), expected_revision=0)
    with pytest.raises(ValueError, match="expected_revision"):
        store.write(canary(model), expected_revision=-1)
    assert shared.exists(store.key) == 0


def test_reads_and_compare_and_set_work_on_a_redis_cluster(redis_cluster, model):
    def cluster_client() -> RedisCluster:
        return RedisCluster.from_url(redis_cluster.url, socket_timeout=1.0, socket_connect_timeout=1.0)

    a, b = CanaryStateStore(cluster_client(), model), CanaryStateStore(cluster_client(), model)
    assert a.read() == (CanaryState.off(model), False)
    written = a.write(canary(model), expected_revision=0)
    assert b.read() == (written, False)
    with pytest.raises(CanaryConflictError):
        b.write(canary(model, weight=50.0), expected_revision=0)


# -- the cache -----------------------------------------------------------------------------------

def test_another_stores_write_shows_after_cache_s_or_invalidate(redis_url, shared, model):
    replica = CanaryStateStore(client(redis_url), model, cache_s=0.3)
    controller = CanaryStateStore(shared, model)
    assert replica.read() == (CanaryState.off(model), False)
    written = controller.write(canary(model), expected_revision=0)
    assert replica.read()[0].mode == "off"  # cached: no round trip, the old answer
    replica.invalidate()
    assert replica.read() == (written, False)
    newer = controller.write(canary(model, weight=25.0, step=2), expected_revision=1)
    assert replica.read() == (written, False)
    time.sleep(0.35)
    assert replica.read() == (newer, False)


def test_cache_s_zero_reads_redis_every_time(shared, model):
    store = CanaryStateStore(shared, model, cache_s=0)
    shared.set(store.key, canary(model).to_json())
    assert store.read()[0].mode == "canary"
    shared.delete(store.key)
    assert store.read() == (CanaryState.off(model), False)
    with pytest.raises(ValueError, match="cache_s"):
        CanaryStateStore(shared, model, cache_s=-1)


# -- faults: a replica falls back to champion only -----------------------------------------------

@pytest.mark.parametrize("value", [b"{not json", b"hash"])
def test_a_corrupt_value_degrades_reads_and_refuses_writes(shared, model, value, caplog):
    store = CanaryStateStore(shared, model, cache_s=0)
    if value == b"hash":
        shared.hset(store.key, "mode", "canary")  # a key of the wrong type: GET fails with WRONGTYPE
    else:
        shared.set(store.key, value)
    with caplog.at_level(logging.INFO, logger=LOGGER):
        for _ in range(5):
            assert store.read() == (CanaryState.off(model), True)
    assert len(warnings_in(caplog)) == 1  # rate-limited: not one line per request
    assert "routing champion only" in warnings_in(caplog)[0].getMessage()
    with pytest.raises(CanaryStateError, match="DEL"):  # no revision to compare with
        store.write(canary(model), expected_revision=0)
    shared.delete(store.key)
    assert store.write(canary(model), expected_revision=0).revision == 1


def test_an_unknown_mode_degrades_reads_and_its_revision_still_guards_writes(shared, model):
    store = CanaryStateStore(shared, model, cache_s=0)
    shared.set(store.key, json.dumps({**asdict(canary(model)), "mode": "blue", "revision": 3}))
    assert store.read() == (CanaryState.off(model), True)
    with pytest.raises(CanaryConflictError):
        store.write(canary(model), expected_revision=0)
    assert store.write(canary(model), expected_revision=3) == replace(canary(model), revision=4)
    assert store.read() == (replace(canary(model), revision=4), False)


def test_a_state_stored_for_another_model_is_not_used(shared, model):
    store = CanaryStateStore(shared, model)
    shared.set(store.key, canary("other-model").to_json())
    assert store.read() == (CanaryState.off(model), True)


def test_redis_down_degrades_within_the_timeout_and_recovers_after_a_restart(redis_proc: RedisProc, model, caplog):
    store = CanaryStateStore(client(redis_proc.url), model, cache_s=0.2)
    written = store.write(canary(model), expected_revision=0)
    store.invalidate()
    assert store.read() == (written, False)
    redis_proc.stop()
    store.invalidate()
    with caplog.at_level(logging.INFO, logger=LOGGER):
        started = time.perf_counter()
        assert store.read() == (CanaryState.off(model), True)
        assert time.perf_counter() - started < 0.5
        started = time.perf_counter()
        for _ in range(100):  # cached: requests don't wait on a dead Redis again
            assert store.read() == (CanaryState.off(model), True)
        assert time.perf_counter() - started < 0.05
        with pytest.raises(CanaryStateError, match="failed the canary state write"):
            store.write(canary(model), expected_revision=1)
        redis_proc.restart()  # nothing persists: it comes back empty
        time.sleep(0.25)
        assert store.read() == (CanaryState.off(model), False)
    assert len(warnings_in(caplog)) == 1
    assert any("readable again" in r.getMessage() for r in caplog.records)
    again = store.write(canary(model, weight=25.0), expected_revision=0)  # the controller starts over
    assert store.read() == (again, False)


def test_a_hung_redis_degrades_within_the_timeout_and_recovers(redis_proc: RedisProc, model):
    store = CanaryStateStore(client(redis_proc.url), model, cache_s=0)
    written = store.write(canary(model), expected_revision=0)
    redis_proc.pause()
    try:
        started = time.perf_counter()
        assert store.read() == (CanaryState.off(model), True)
        assert time.perf_counter() - started < 0.5
    finally:
        redis_proc.resume()
    assert store.read() == (written, False)
