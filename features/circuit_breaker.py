"""A circuit breaker for reads from one store: fail at once while it is down, say when it is slow.

    closed ──(consecutive failures >= failures_to_open)──► open ──(a background probe answers)──► closed
       │                                                     │
       └─ every read's latency feeds an EWMA: ``slow`` ◄─────┘ reads fail at once, no I/O

Why: a server that scores on its event loop's thread must never wait on a hung store. Once a read
has timed out, the next ones would time out too, each holding the loop for the whole timeout; the
open breaker answers them in microseconds instead, and a daemon thread probes the store every
``probe_interval_s`` until it answers, so service resumes about one probe interval after the store
does. ``slow`` tells a caller that the store answers, but slowly enough (an EWMA above
``slow_ms``) that its calls belong on a worker thread rather than on the loop.

The breaker knows nothing about Redis: the owner of the connection passes the probe and records
each read's outcome (:meth:`CircuitBreaker.record_success` / :meth:`~CircuitBreaker.record_failure`).
"""

from __future__ import annotations

import logging
import math
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass

__all__ = ["BreakerPolicy", "CircuitBreaker"]

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class BreakerPolicy:
    """When a breaker opens, how often it probes, and what counts as slow."""

    failures_to_open: int = 1     # consecutive failed reads that open it (a timeout already cost the budget)
    probe_interval_s: float = 0.1  # seconds between probes while open
    slow_ms: float = 5.0           # EWMA of read latency (milliseconds) above which the store is slow
    ewma_weight: float = 0.2       # weight of the newest read in that average

    def __post_init__(self) -> None:
        if self.failures_to_open < 1 or not self.probe_interval_s > 0 or not self.slow_ms > 0 \
                or not 0 < self.ewma_weight <= 1:
            raise ValueError(f"invalid breaker policy {self}: failures_to_open >= 1, probe_interval_s > 0, "
                             "slow_ms > 0 and 0 < ewma_weight <= 1")


class CircuitBreaker:
    """Thread-safe; reads of :attr:`open` and :attr:`slow` take no lock (the request path)."""

    def __init__(self, probe: Callable[[], None], policy: BreakerPolicy | None = None, *, name: str = "store") -> None:
        """``probe()`` returns when the store answers and raises when it does not; it must bound
        its own wait (a socket timeout)."""
        self.policy = policy or BreakerPolicy()
        self.name = name
        self._probe = probe
        self._lock = threading.Lock()
        self._failures = 0
        self._ewma_s = 0.0
        self.open = False
        self.slow = False
        self.opened_at: float | None = None  # time.time() of the last opening
        self.last_error = ""
        self.times_opened = 0
        self._prober: threading.Thread | None = None
        self._closed = threading.Event()
        self._listeners: list[Callable[[], None]] = []

    def on_change(self, listener: Callable[[], None]) -> None:
        """Call ``listener()`` after each change of :attr:`open` or :attr:`slow`, from the thread
        that made it (a request's, or the probe's): a worker's metrics follow the breaker without
        waiting for the next scrape that worker answers."""
        self._listeners.append(listener)

    def _changed(self) -> None:
        for listener in self._listeners:
            try:
                listener()
            except Exception:  # a listener's failure must not fail the read that changed the state
                log.exception("%s breaker listener failed", self.name)

    # -- what the owner records ------------------------------------------------------------------

    def record_success(self, seconds: float) -> None:
        """A read answered after ``seconds``."""
        w = self.policy.ewma_weight
        self._ewma_s = (1 - w) * self._ewma_s + w * seconds  # a lost update under a race only blurs the average
        slow = self._ewma_s * 1e3 > self.policy.slow_ms
        if slow != self.slow:
            self.slow = slow
            log.warning("%s reads are %s (average %.1f ms, threshold %.1f ms)", self.name,
                        "slow: scoring moves off the event loop" if slow else "fast again",
                        self._ewma_s * 1e3, self.policy.slow_ms)
            self._changed()
        if self._failures:
            with self._lock:
                self._failures = 0

    def record_failure(self, error: BaseException) -> None:
        """A read failed (timed out, refused); enough of them in a row open the breaker."""
        with self._lock:
            self._failures += 1
            self.last_error = f"{type(error).__name__}: {error}"
            if self.open or self._failures < self.policy.failures_to_open or self._closed.is_set():
                return
            self.open, self.opened_at = True, time.time()
            self.times_opened += 1
            self._prober = threading.Thread(target=self._probe_until_closed, name=f"{self.name}-probe", daemon=True)
            self._prober.start()
        log.error("%s is unavailable (%s); failing reads at once, probing every %.0f ms", self.name,
                  self.last_error, self.policy.probe_interval_s * 1e3)
        self._changed()

    # -- the probe -------------------------------------------------------------------------------

    def _probe_until_closed(self) -> None:
        started = time.monotonic()
        while not self._closed.wait(self.policy.probe_interval_s):
            try:
                self._probe()
            except Exception as exc:  # noqa: BLE001  (any failure: still down)
                self.last_error = f"{type(exc).__name__}: {exc}"
                continue
            with self._lock:
                self.open, self._failures, self._ewma_s, self.slow = False, 0, 0.0, False
            log.warning("%s answers again after %.1f s; reads resume", self.name, time.monotonic() - started)
            self._changed()
            return

    def close(self) -> None:
        """Retire the breaker for good (the store is gone, or its owner shuts down): probing stops,
        reads pass again and fail as they would without it."""
        self._closed.set()
        with self._lock:
            self.open, self._failures = False, 0

    def wait_closed(self, timeout_s: float) -> bool:
        """Block until the breaker is closed (True) or ``timeout_s`` seconds pass (False)."""
        deadline = time.monotonic() + timeout_s
        while self.open and time.monotonic() < deadline:
            time.sleep(min(0.01, self.policy.probe_interval_s))
        return not self.open

    @property
    def average_ms(self) -> float:
        """The EWMA of successful reads' latency, in milliseconds (NaN before the first)."""
        return self._ewma_s * 1e3 if self._ewma_s else math.nan
