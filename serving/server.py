"""``tidemark serve``: wire the scorer, the model slots, the canary state and the prediction log
into the ASGI app, and keep them fresh in the background.

    every refresh_s:  ModelSlots.refresh()   alias moved? load + warm the new version, then swap
                      (at once when the canary state names a champion that is not loaded)
    every second:     PING the online store unless its circuit breaker is open (then the breaker
                      probes it every 50 ms until it answers): /readyz knows within a second
    every request:    CanaryStateStore.read() (cached ~1 s), OnlineReader, models, PredictionLog;
                      on the event loop's thread on a CPU while the store is fast, in worker
                      threads with a GPU or while the store is slow; none of it while it is down
    /readyz:          a champion is loaded and the online store's breaker is closed (no I/O)
"""

from __future__ import annotations

import logging
import threading
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

import numpy as np

from features.circuit_breaker import BreakerPolicy
from features.corrupt_values import CORRUPT_VALUES
from features.errors import OnlineStoreUnavailable
from features.redaction import redact
from serving.app import ApiLimits, CanaryAdmin, create_app
from serving.model_slots import ModelSlots
from serving.scorer import CHALLENGER, CHAMPION, Scorer

if TYPE_CHECKING:
    from starlette.applications import Starlette

    from features.sdk import FeatureClient
    from tidemark.settings import Settings

__all__ = ["Server", "build_server"]

log = logging.getLogger(__name__)


@dataclass
class Server:
    """The running parts of one serving process."""

    app: Starlette
    scorer: Scorer
    slots: ModelSlots
    settings: Settings
    refresh_s: float = 10.0
    _stop: threading.Event = field(default_factory=threading.Event)
    _wake: threading.Event = field(default_factory=threading.Event)

    def start_refresh(self) -> None:
        """Poll the registry's aliases every ``refresh_s`` seconds, and at once when the canary
        state names a champion that is not loaded (a promotion); add canary evidence to Redis every
        second; PING the online store every second. Daemon threads."""
        def refresh() -> None:
            while True:
                self._wake.wait(self.refresh_s)
                self._wake.clear()
                if self._stop.is_set():
                    return
                self.slots.refresh()

        self.scorer.on_stale = self._wake.set

        def evidence() -> None:
            while not self._stop.wait(1.0):
                if self.scorer.evidence is not None:
                    self.scorer.evidence.flush()

        def watch_store() -> None:
            redis_online, missed = self.scorer.reader.redis, 0
            while not self._stop.wait(1.0):
                breaker = redis_online.breaker
                if breaker is None or breaker.open:
                    continue  # an open breaker probes by itself
                try:
                    redis_online.ping()
                    missed = 0
                except OnlineStoreUnavailable as exc:
                    missed += 1
                    if missed >= 2:  # two in a row: one slow PING on a busy host is no outage
                        breaker.record_failure(exc)

        for target, name in ((refresh, "model-refresh"), (evidence, "canary-evidence"), (watch_store, "store-watch")):
            threading.Thread(target=target, name=name, daemon=True).start()

    def close(self) -> None:
        """Stop refreshing, finish shadow work, flush the prediction log. Idempotent."""
        if self._stop.is_set():
            return
        self._stop.set()
        self._wake.set()
        self.scorer.close()
        if self.scorer.evidence is not None:
            self.scorer.evidence.flush()
        if self.scorer.log_sink is not None:
            self.scorer.log_sink.close()


def build_server(settings: Settings, *, feature_client: FeatureClient | None = None, refresh_s: float = 10.0,
                 limits: ApiLimits | None = None, prediction_log: bool = True,
                 batching: dict[str, int] | None = None, admin: CanaryAdmin | None = None,
                 inline: bool | None = None, torch_threads: int | None = None) -> Server:
    """Everything ``tidemark serve`` runs, for ``settings``; models are loaded before it returns.

    ``inline`` (default: when there is no CUDA device) scores requests on the event loop's thread
    and calls the champion directly: on a CPU the work is about a millisecond of GIL-bound Python
    and numpy, and a hop to a worker thread and on to a batcher costs more than it overlaps
    (``docs/benchmarks.md``). The challenger is called the same way: the canary compares the two
    models' latencies, so both must be timed on one path (behind its batcher, a CPU challenger of
    the champion's own architecture measured twice its p99 and was rolled back). Neither call has
    a timeout then. Otherwise requests run in worker threads and both models batch across them.
    """
    import torch
    from mlflow import MlflowClient

    from features.sdk import FeatureClient
    from serving.canary_evidence import EvidenceRecorder
    from serving.canary_state import CanaryStateStore

    fc = feature_client or FeatureClient(settings)
    reader = fc.online_reader()
    redis_online = reader.redis
    # fail fast while Redis is down, and say when it is slow (requests then leave the event loop)
    breaker = redis_online.use_breaker(BreakerPolicy(probe_interval_s=0.05))
    try:  # a server that starts while Redis is down starts not ready, until the breaker's probe gets an answer
        redis_online.ping()
    except OnlineStoreUnavailable as exc:
        breaker.record_failure(exc)
    client = MlflowClient(tracking_uri=settings.tracking_uri, registry_uri=settings.tracking_uri)
    if inline is None:
        inline = not torch.cuda.is_available()
    if torch_threads:
        # Intra-op threads of a CPU model, process-wide (`tidemark serve` sets 1 on a CPU node):
        # requests are small and run side by side, and a model's latency evidence is its call's CPU
        # time on its own thread, which a pool would split and inflate with spin-waits.
        torch.set_num_threads(torch_threads)
    slots = ModelSlots(client, settings.model_name, batching=batching or {},
                       direct=(CHAMPION, CHALLENGER) if inline else (), base_backoff_s=max(refresh_s, 1.0))
    slots.refresh()
    sink = None
    if prediction_log:
        from serving.prediction_log import PredictionLog
        from serving.prediction_log_schema import model_log_root

        sink = PredictionLog(model_log_root(settings.offline_dir, settings.model_name))
    metrics = _Metrics()
    canary = CanaryStateStore(redis_online.reader, settings.model_name, available=lambda: not breaker.open)
    scorer = Scorer(slots, reader, canary, sink,
                    on_scored=metrics.observe, evidence=EvidenceRecorder(redis_online.writer, settings.model_name))
    metrics.watch(scorer)

    def ready() -> tuple[bool, list[str]]:  # no I/O: the store-watch thread and the breaker keep the state
        reasons = [f"{alias}: {error}" for alias, error in dict(slots.errors).items()]  # redacted by ModelSlots
        reasons += [f"the {alias} alias of {settings.model_name!r} is gone from the registry; still serving "
                    f"v{loaded.version}" for alias in sorted(slots.missing) if (loaded := slots.get(alias))]
        if slots.get(CHAMPION) is None:
            reasons.insert(0, f"no champion of {settings.model_name!r} is loaded")
        if breaker.open:
            reasons.insert(0, f"online store unreachable: {redact(breaker.last_error)}")
            return False, reasons
        return slots.get(CHAMPION) is not None, reasons

    closers: list[Server] = []
    app = create_app(scorer, limits=limits, ready=ready, metrics=metrics.render,
                     on_shutdown=lambda: closers[0].close(), admin=admin, admin_token=settings.admin_token,
                     inline=inline, on_predict=metrics.request, store=breaker)
    server = Server(app, scorer, slots, settings, refresh_s)
    closers.append(server)
    return server


class _Metrics:
    """Prometheus metrics of one process: request latency by status class; rows, model time and
    scores per variant; and, read from the scorer when scraped, failed rows per variant and the
    rows and shadow batches dropped (:class:`_ScorerCollector`)."""

    def __init__(self) -> None:
        from prometheus_client import CollectorRegistry, Counter, Histogram

        self.registry = CollectorRegistry()
        self.rows = Counter("tidemark_scored_rows", "Rows scored", ["variant"], registry=self.registry)
        self.seconds = Histogram("tidemark_model_seconds", "Model time per call", ["variant"],
                                 buckets=(1e-4, 2.5e-4, 5e-4, 1e-3, 2.5e-3, 5e-3, 1e-2, 2.5e-2, 0.1),
                                 registry=self.registry)
        self.scores = Histogram("tidemark_score", "Scores (binary: P(positive); multiclass: the top class's "
                                "probability; regression: the value)", ["variant"],
                                buckets=(0.001, 0.005, 0.01, 0.05, 0.1, 0.25, 0.5, 0.75, 0.9), registry=self.registry)
        latency = Histogram("tidemark_predict_request_seconds",
                            "POST /v1/predict: body read to response built, seconds, by HTTP status class",
                            ["status"], buckets=(5e-4, 1e-3, 2.5e-3, 5e-3, 1e-2, 2.5e-2, 5e-2, 0.1, 0.25, 1.0),
                            registry=self.registry)
        # one child per class up front: every series shows from the first scrape, no lookup per request
        self._latency = {c: latency.labels(f"{c}xx") for c in (2, 4, 5)}
        self.disconnects = Counter("tidemark_client_disconnects", "POST /v1/predict clients gone before their body "
                                   "arrived (not an error of the server)", registry=self.registry)

    def observe(self, variant: str, rows: int, seconds: float, scores: np.ndarray) -> None:
        self.rows.labels(variant).inc(rows)
        self.seconds.labels(variant).observe(seconds)
        histogram = self.scores.labels(variant)
        for s in scores[:64]:  # a sample per call keeps big batches cheap
            histogram.observe(float(s))

    def request(self, status: int, seconds: float) -> None:
        """One ``POST /v1/predict`` answered with ``status`` after ``seconds`` (499: the client left)."""
        if status == 499:
            self.disconnects.inc()
            return
        child = self._latency.get(status // 100)
        if child is not None:
            child.observe(seconds)

    def watch(self, scorer: Scorer) -> None:
        """Export ``scorer``'s error and drop counts, read at scrape time (they live on the scorer)."""
        self.registry.register(_ScorerCollector(scorer))

    def render(self) -> tuple[bytes, Any]:
        from prometheus_client import CONTENT_TYPE_LATEST, generate_latest

        return generate_latest(self.registry), CONTENT_TYPE_LATEST


class _ScorerCollector:
    """Counts the scorer keeps itself, as Prometheus counters: rows each variant failed on (the
    champion answered them, or the request got a 503), prediction-log rows dropped, and shadow
    batches dropped because the shadow queue was full."""

    def __init__(self, scorer: Scorer) -> None:
        self.scorer = scorer

    def describe(self) -> list[Any]:
        return list(self.collect())

    def collect(self) -> Any:
        from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily

        errors = CounterMetricFamily("tidemark_variant_errors", "Rows a variant failed to score", labels=["variant"])
        for variant, stats in list(self.scorer.stats.items()):
            errors.add_metric([variant], stats.errors)
        yield errors
        sink = self.scorer.log_sink
        dropped = CounterMetricFamily("tidemark_prediction_log_dropped_rows", "Rows the prediction log dropped, "
                                      "by reason", labels=["reason"])
        for reason, rows in (sink.dropped_by_reason if sink is not None else {}).items():
            dropped.add_metric([reason], rows)
        yield dropped
        yield CounterMetricFamily("tidemark_shadow_dropped_batches",
                                  "Shadow batches dropped: the shadow queue was full", value=self.scorer.shadow_dropped)
        yield CounterMetricFamily("tidemark_online_corrupt_values", "Corrupt online values read (served as missing)",
                                  value=CORRUPT_VALUES.count)
        breaker = self.scorer.reader.redis.breaker
        if breaker is not None:
            yield GaugeMetricFamily("tidemark_online_store_up", "1 while the online store's circuit breaker is "
                                    "closed, 0 while it is open (reads fail at once)", value=0 if breaker.open else 1)
            yield GaugeMetricFamily("tidemark_online_store_slow", "1 while online reads are slow (scoring runs on "
                                    "worker threads)", value=1 if breaker.slow else 0)
            yield CounterMetricFamily("tidemark_online_store_breaker_opens", "Times the online store's circuit "
                                      "breaker opened", value=breaker.times_opened)
        missing = GaugeMetricFamily("tidemark_model_alias_missing", "1 when the alias is gone from the registry and "
                                    "the last loaded model still serves", labels=["alias"])
        for alias in self.scorer.slots.aliases:
            missing.add_metric([alias], 1 if alias in self.scorer.slots.missing else 0)
        yield missing
