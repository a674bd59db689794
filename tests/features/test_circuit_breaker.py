"""The read breaker's states: closed, open after failures, closed again once its probe answers."""

from __future__ import annotations

import threading

import pytest

from features.circuit_breaker import BreakerPolicy, CircuitBreaker


class Store:
    """A probe target that is down until told otherwise (the breaker only sees the probe)."""

    def __init__(self) -> None:
        self.up = threading.Event()
        self.probes = 0

    def probe(self) -> None:
        self.probes += 1
        if not self.up.is_set():
            raise ConnectionError("refused")


def test_opens_after_the_configured_failures_and_closes_when_the_probe_answers() -> None:
    store = Store()
    breaker = CircuitBreaker(store.probe, BreakerPolicy(failures_to_open=2, probe_interval_s=0.01))
    breaker.record_failure(TimeoutError("read"))
    assert not breaker.open
    breaker.record_success(0.001)  # a success in between resets the count
    breaker.record_failure(TimeoutError("read"))
    assert not breaker.open
    breaker.record_failure(TimeoutError("read"))
    assert breaker.open and breaker.times_opened == 1 and "TimeoutError" in breaker.last_error
    assert not breaker.wait_closed(0.1) and store.probes >= 2  # still down: it keeps probing
    store.up.set()
    assert breaker.wait_closed(2.0)
    breaker.record_failure(TimeoutError("again"))
    breaker.record_failure(TimeoutError("again"))
    assert breaker.open and breaker.times_opened == 2


def test_slow_follows_the_average_latency_both_ways() -> None:
    breaker = CircuitBreaker(lambda: None, BreakerPolicy(slow_ms=5.0, ewma_weight=0.5))
    breaker.record_success(0.001)
    assert not breaker.slow
    for _ in range(4):
        breaker.record_success(0.030)
    assert breaker.slow and breaker.average_ms > 5
    for _ in range(8):
        breaker.record_success(0.0005)
    assert not breaker.slow


@pytest.mark.parametrize("bad", [{"failures_to_open": 0}, {"probe_interval_s": 0}, {"slow_ms": -1},
                                 {"ewma_weight": 1.5}])
def test_a_policy_that_cannot_work_is_refused(bad: dict) -> None:
    with pytest.raises(ValueError, match="breaker policy"):
        BreakerPolicy(**bad)


def test_listeners_hear_each_opening_and_closing_from_the_thread_that_made_it() -> None:
    store = Store()
    breaker = CircuitBreaker(store.probe, BreakerPolicy(failures_to_open=1, probe_interval_s=0.01))
    seen: list[bool] = []
    closed = threading.Event()
    breaker.on_change(lambda: (seen.append(breaker.open), None if breaker.open else closed.set()))
    breaker.on_change(lambda: 1 / 0)  # a failing listener is logged, the others still hear
    breaker.record_failure(TimeoutError("read"))
    assert seen == [True]
    store.up.set()
    assert closed.wait(2.0) and seen == [True, False]


def test_a_workers_store_gauge_follows_its_breaker_without_a_scrape() -> None:
    """With several workers each keeps its gauges in its own file, which a scrape answered by
    another worker reads: the breaker's state is written when it changes, not at this worker's
    next scrape (the open state it last saw stayed there, and the fleet read as store down)."""
    from serving.metrics import ServingMetrics

    store = Store()
    breaker = CircuitBreaker(store.probe, BreakerPolicy(failures_to_open=1, probe_interval_s=0.01))
    metrics = ServingMetrics()

    def up() -> float | None:
        return metrics.registry.get_sample_value("tidemark_online_store_up")

    assert up() == 0  # a gauge starts at 0: a worker still loading its models read as "store down"
    metrics.watch_breaker(breaker)  # what build_server does before it loads them
    assert up() == 1
    metrics.watch({}, breaker=breaker)  # the same breaker again: one listener, the same value
    assert up() == 1 and len(breaker._listeners) == 1
    breaker.record_failure(TimeoutError("read"))
    assert up() == 0
    store.up.set()
    assert breaker.wait_closed(2.0)
    for _ in range(200):  # the probe thread writes it just after closing
        if up() == 1:
            break
        threading.Event().wait(0.01)
    assert up() == 1
