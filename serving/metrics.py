"""Prometheus metrics of ``tidemark serve``: one process, or a fleet of worker processes on one port.

    request path          counters and histograms, updated as requests are answered
    ServingMetrics.sync   what the scorers keep (errors, drops, loaded versions, the canary state,
                          the online store's breaker), copied into the metrics every second by the
                          server's background thread and at each scrape by the process scraped
    GET /metrics          render(): one process's registry, or every worker's values

**Workers** (``tidemark serve --workers N``): prometheus_client's multiprocess mode. The supervisor
sets ``TIDEMARK_METRICS_DIR`` and ``PROMETHEUS_MULTIPROC_DIR`` to an empty folder before the
workers start (tidemark's own variable says it is a fleet: importing Feast sets
``PROMETHEUS_MULTIPROC_DIR`` in any process that has none, to a folder of its own); each worker writes
its values to memory-mapped files there, and the worker that answers a scrape reads them all, so
one scrape gives the fleet's totals with no ``pid`` label: counters and histograms are summed (a
worker that died still counts in them, so they never go backwards), and each gauge is aggregated
over the live workers the way its meaning asks (``MULTIPROCESS_MODE``: the online store is up only
if it is up for every worker, a model is loaded only if every worker loaded it, the queue is the
sum). The process's own CPU, memory and start time are per worker (``tidemark_worker_*`` with a
``pid`` label) since the standard ``process_*`` collector only sees the process scraped.
"""

from __future__ import annotations

import contextlib
import os
import threading
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from features.corrupt_values import CORRUPT_VALUES
from serving.canary_state import MODES
from serving.scored_events import PUSH_ERROR_REASONS

if TYPE_CHECKING:
    from features.circuit_breaker import CircuitBreaker
    from serving.server import ServedModel

__all__ = ["MULTIPROCESS_DIR_ENV", "ServingMetrics", "multiprocess_dir", "use_multiprocess_dir"]

#: The workers' shared metrics folder, set by ``tidemark serve``'s supervisor before they start.
MULTIPROCESS_DIR_ENV = "TIDEMARK_METRICS_DIR"


def multiprocess_dir() -> Path | None:
    """The workers' shared metrics folder, or None in a single process."""
    value = os.environ.get(MULTIPROCESS_DIR_ENV)
    return Path(value) if value else None


def use_multiprocess_dir(folder: Path) -> None:
    """Make ``folder`` (emptied) the metrics folder of the workers this process starts next (they
    inherit the environment)."""
    folder.mkdir(parents=True, exist_ok=True)
    for path in folder.glob("*.db"):  # a previous run's values (prometheus_client requires it)
        path.unlink(missing_ok=True)
    os.environ[MULTIPROCESS_DIR_ENV] = os.environ["PROMETHEUS_MULTIPROC_DIR"] = str(folder)


class ServingMetrics:
    """The metrics of one serving process, by model (a worker of a fleet when
    ``PROMETHEUS_MULTIPROC_DIR`` is set: then :meth:`render` answers for every worker)."""

    def __init__(self) -> None:
        from prometheus_client import (
            GC_COLLECTOR,
            PLATFORM_COLLECTOR,
            PROCESS_COLLECTOR,
            CollectorRegistry,
            Counter,
            Gauge,
            Histogram,
        )

        self.folder = multiprocess_dir()
        self.registry = CollectorRegistry()  # the definitions; what one process renders
        if self.folder is None:
            # the process's own CPU, memory, open files, GC and Python version, as every Prometheus
            # client exports them (a private registry has none of them unless they are added)
            for collector in (PROCESS_COLLECTOR, PLATFORM_COLLECTOR, GC_COLLECTOR):
                self.registry.register(collector)
            self._exposed = self.registry
        else:
            from prometheus_client import multiprocess

            self._exposed = CollectorRegistry()
            multiprocess.MultiProcessCollector(self._exposed, path=str(self.folder))
            self._exposed.register(PLATFORM_COLLECTOR)  # the same in every worker

        def counter(name: str, doc: str, labels: Sequence[str] = ()) -> Any:
            return Counter(name, doc, labels, registry=self.registry)

        def gauge(name: str, doc: str, labels: Sequence[str], mode: Any) -> Any:  # mode: how workers combine
            return Gauge(name, doc, labels, registry=self.registry, multiprocess_mode=mode)

        # -- the request path
        self.rows = counter("tidemark_scored_rows", "Rows scored", ["model", "variant"])
        self.seconds = Histogram("tidemark_model_seconds", "Model time per call", ["model", "variant"],
                                 buckets=(1e-4, 2.5e-4, 5e-4, 1e-3, 2.5e-3, 5e-3, 1e-2, 2.5e-2, 0.1),
                                 registry=self.registry)
        self.scores = Histogram("tidemark_score", "Scores (binary: P(positive); multiclass: the top class's "
                                "probability; regression: the value)", ["model", "variant"],
                                buckets=(0.001, 0.005, 0.01, 0.05, 0.1, 0.25, 0.5, 0.75, 0.9), registry=self.registry)
        self._request_latency = Histogram(
            "tidemark_predict_request_seconds", "POST predict: body read to response built, seconds, by model and "
            "HTTP status class", ["model", "status"], buckets=(5e-4, 1e-3, 2.5e-3, 5e-3, 1e-2, 2.5e-2, 5e-2, 0.1,
                                                               0.25, 1.0), registry=self.registry)
        self._latency: dict[tuple[str, int], Any] = {}  # (model, status class) -> child: no lookup per request
        self._variant_children: dict[tuple[str, str], tuple[Any, Any, Any]] = {}
        self._read_children: dict[str, Any] = {}
        self._push_errors = counter("tidemark_push_errors", "Scored requests whose events were not pushed (the "
                                    "predictions were answered), by reason", ["model", "reason"])
        self.disconnects = counter("tidemark_client_disconnects", "POST predict clients gone before their body "
                                   "arrived (not an error of the server)", ["model"])
        self._read_seconds = Histogram("tidemark_online_read_seconds", "Online store read per request, seconds "
                                       "(failed reads included)", ["model"],
                                       buckets=(2.5e-4, 5e-4, 1e-3, 2.5e-3, 5e-3, 1e-2, 2.5e-2, 5e-2, 0.1),
                                       registry=self.registry)
        self._read_errors = counter("tidemark_online_read_errors", "Online store reads that failed (the request "
                                    "got a 503)", ["model"])
        # -- copied from the scorers by sync()
        self.variant_errors = counter("tidemark_variant_errors", "Rows a variant failed to score",
                                      ["model", "variant"])
        self.log_dropped = counter("tidemark_prediction_log_dropped_rows", "Rows the prediction log dropped, "
                                   "by reason", ["model", "reason"])
        self.log_queue = gauge("tidemark_prediction_log_queue_rows", "Prediction rows in memory, not yet on disk",
                               ["model"], "livesum")
        self.shadow_dropped = counter("tidemark_shadow_dropped_batches",
                                      "Shadow batches dropped: the shadow queue was full", ["model"])
        self.alias_missing = gauge("tidemark_model_alias_missing", "1 when the alias is gone from the registry and "
                                   "the last loaded model still serves", ["model", "alias"], "livemax")
        self.loaded = gauge("tidemark_model_loaded", "1 when every worker has a model loaded for the alias",
                            ["model", "alias"], "livemin")
        self.version = gauge("tidemark_model_version_info", "1 for the registered version each alias serves now "
                             "(join on it to tell variants' versions apart)", ["model", "alias", "version"], "livemax")
        self.refreshed = gauge("tidemark_model_last_refresh_timestamp_seconds", "When the registry's aliases were "
                               "last read successfully (the stalest worker's), Unix seconds", ["model"], "livemin")
        self.canary_weight = gauge("tidemark_canary_weight_percent", "Share of rows routed to the challenger, "
                                   "percent (0 while off or in shadow)", ["model"], "livemax")
        self.canary_mode = gauge("tidemark_canary_mode", "1 for the canary's mode (off, shadow, canary)",
                                 ["model", "mode"], "livemax")
        self.corrupt = counter("tidemark_online_corrupt_values", "Corrupt online values read (served as missing)")
        self.store_up = gauge("tidemark_online_store_up", "1 while the online store's circuit breaker is closed "
                              "for every worker, 0 while it is open for one (reads fail at once)", (), "livemin")
        self.store_slow = gauge("tidemark_online_store_slow", "1 while online reads are slow for a worker (scoring "
                                "runs on worker threads)", (), "livemax")
        self.breaker_opens = counter("tidemark_online_store_breaker_opens",
                                     "Times the online store's circuit breaker opened")
        self._workers: tuple[Any, Any, Any] | None = None
        if self.folder is not None:
            self._workers = (
                gauge("tidemark_worker_cpu_seconds", "CPU seconds of each worker process", (), "liveall"),
                gauge("tidemark_worker_resident_memory_bytes", "Resident memory of each worker process", (), "liveall"),
                gauge("tidemark_worker_start_time_seconds", "Start of each worker process, Unix seconds", (),
                      "liveall"))
        self._served: Mapping[str, ServedModel] = {}
        self._breaker: CircuitBreaker | None = None
        self._added: dict[tuple[str, tuple[str, ...]], float] = {}  # counter series -> total copied so far
        self._versions: dict[tuple[str, str], str] = {}             # (model, alias) -> version shown as 1
        self._lock = threading.Lock()

    # -- the request path

    def observe(self, model: str, variant: str, rows: int, seconds: float, scores: np.ndarray) -> None:
        children = self._variant_children.get((model, variant))
        if children is None:  # labels() costs microseconds: once per (model, variant)
            children = self._variant_children[(model, variant)] = (
                self.rows.labels(model, variant), self.seconds.labels(model, variant),
                self.scores.labels(model, variant))
        counted, timed, histogram = children
        counted.inc(rows)
        timed.observe(seconds)
        for s in scores[:64]:  # a sample per call keeps big batches cheap
            histogram.observe(float(s))

    def read(self, model: str, seconds: float, ok: bool) -> None:
        """One online store read of a ``model``'s request, ``ok`` or failed, after ``seconds``."""
        child = self._read_children.get(model)
        if child is None:
            child = self._read_children[model] = self._read_seconds.labels(model)
        child.observe(seconds)
        if not ok:
            self._read_errors.labels(model).inc()

    def push_error(self, model: str, reason: str) -> None:
        """A scored request of ``model`` whose events could not be pushed, for ``reason``."""
        self._push_errors.labels(model, reason).inc()

    def request(self, model: str, status: int, seconds: float) -> None:
        """One predict request of ``model`` answered with ``status`` after ``seconds`` (499: the client left)."""
        if status == 499:
            self.disconnects.labels(model).inc()
            return
        child = self._latency.get((model, status // 100))
        if child is not None:
            child.observe(seconds)

    # -- wiring and scraping

    def watch(self, served: Mapping[str, ServedModel], *, pushing: Sequence[str] = (),
              breaker: CircuitBreaker | None = None) -> None:
        """Export ``served``'s state (:meth:`sync`), and show every model's series from the first
        scrape: ``pushing``, the models that push their scored events, get their push error series."""
        self._served = served
        if breaker is not None and breaker is not self._breaker:
            self.watch_breaker(breaker)
        for model in served:
            self._latency.update({(model, c): self._request_latency.labels(model, f"{c}xx") for c in (2, 4, 5)})
            self.disconnects.labels(model)
            self._read_errors.labels(model)
        for model in pushing:
            for reason in PUSH_ERROR_REASONS:
                self._push_errors.labels(model, reason)
        self.sync()

    def watch_breaker(self, breaker: CircuitBreaker) -> None:
        """Export the online store's breaker from now on, before the models load: a worker that is
        still loading shows the store as it is, not as down (``tidemark_online_store_up`` is the
        minimum over the workers, and a gauge starts at 0)."""
        self._breaker = breaker
        breaker.on_change(self._breaker_changed)
        self._breaker_changed()

    def sync(self) -> None:
        """Copy what the scorers, the slots, the canary state and the breaker hold into the metrics."""
        with self._lock:
            for model, served in self._served.items():
                self._sync_model(model, served)
            self._count(self.corrupt, (), CORRUPT_VALUES.count)
            self._sync_breaker()
            if self._workers is not None:
                self._sync_worker()

    def _sync_breaker(self) -> None:
        breaker = self._breaker
        if breaker is not None:
            self.store_up.set(0 if breaker.open else 1)
            self.store_slow.set(1 if breaker.slow else 0)
            self._count(self.breaker_opens, (), breaker.times_opened)

    def _breaker_changed(self) -> None:
        """The breaker opened, closed, or turned slow or fast: written at once. With several workers
        each keeps its own values in its file, and a scrape answered by another worker reads them:
        written only when this worker answers a scrape, they stayed at the state it last saw."""
        with self._lock:
            self._sync_breaker()

    def render(self) -> tuple[bytes, str]:
        """The Prometheus text of this process, or of every worker: (body, content type)."""
        from prometheus_client import CONTENT_TYPE_LATEST, generate_latest

        self.sync()
        if self.folder is not None:
            _forget_dead_workers(self.folder)
        return generate_latest(self._exposed), CONTENT_TYPE_LATEST

    def _sync_model(self, model: str, served: ServedModel) -> None:
        scorer, slots = served.scorer, served.slots
        for variant, stats in list(scorer.stats.items()):
            self._count(self.variant_errors, (model, variant), stats.errors)
        sink = scorer.log_sink
        if sink is not None:
            for reason, rows in sink.dropped_by_reason.items():
                self._count(self.log_dropped, (model, reason), rows)
            self.log_queue.labels(model).set(sink.pending_rows)
        self._count(self.shadow_dropped, (model,), scorer.shadow_dropped)
        for alias in slots.aliases:
            loaded = slots.get(alias)
            self.alias_missing.labels(model, alias).set(1 if alias in slots.missing else 0)
            self.loaded.labels(model, alias).set(0 if loaded is None else 1)
            self._show_version(model, alias, None if loaded is None else str(loaded.version))
        self.refreshed.labels(model).set(slots.refreshed_at or 0.0)  # 0: never (an alert's "stale")
        if scorer.canary is not None:
            state, _degraded = scorer.canary.read()  # cached by the store: no Redis call per scrape
            self.canary_weight.labels(model).set(state.weight_pct if state.mode == "canary" else 0.0)
            for mode in MODES:
                self.canary_mode.labels(model, mode).set(1 if state.mode == mode else 0)

    def _show_version(self, model: str, alias: str, version: str | None) -> None:
        shown = self._versions.get((model, alias))
        if shown == version:
            return
        if shown is not None:  # 0 first: a worker's file keeps the last value of a series it drops
            self.version.labels(model, alias, shown).set(0)
            self.version.remove(model, alias, shown)
            del self._versions[(model, alias)]
        if version is not None:
            self.version.labels(model, alias, version).set(1)
            self._versions[(model, alias)] = version

    def _count(self, counter: Any, labels: tuple[str, ...], total: float) -> None:
        """Add to ``counter`` what ``total`` (a count kept elsewhere) grew by since the last call."""
        key = (counter._name, labels)
        added = total - self._added.get(key, 0.0)
        if added > 0:
            (counter.labels(*labels) if labels else counter).inc(added)
        elif labels:
            counter.labels(*labels)  # the series shows from the first scrape, at 0
        self._added[key] = total

    def _sync_worker(self) -> None:
        from prometheus_client import PROCESS_COLLECTOR

        assert self._workers is not None
        cpu, memory, start = self._workers
        for family in PROCESS_COLLECTOR.collect():
            for sample in family.samples:
                target = {"process_cpu_seconds_total": cpu, "process_resident_memory_bytes": memory,
                          "process_start_time_seconds": start}.get(sample.name)
                if target is not None:
                    target.set(sample.value)


def _forget_dead_workers(folder: Path) -> None:
    """Drop the live gauges of workers that are gone (their counters stay in the totals)."""
    from prometheus_client import multiprocess

    pids = set()
    for path in folder.glob("gauge_live*_*.db"):
        with contextlib.suppress(ValueError):
            pids.add(int(path.stem.rsplit("_", 1)[1]))
    for pid in pids:
        if not _alive(pid):
            multiprocess.mark_process_dead(pid, str(folder))


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:  # someone else's process now holds the number
        return False
    return True
