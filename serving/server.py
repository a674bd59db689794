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

import functools
import logging
import threading
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

import numpy as np

from features.circuit_breaker import BreakerPolicy
from features.corrupt_values import CORRUPT_VALUES
from features.errors import OnlineStoreUnavailable, UnknownPushSourceError
from features.redaction import redact
from serving.app import ApiLimits, CanaryAdmin, create_app
from serving.model_slots import ModelSlots
from serving.scored_events import PUSH_ERROR_REASONS, ScoredEvents
from serving.scorer import CHALLENGER, CHAMPION, Scorer
from tidemark.errors import ConfigError

if TYPE_CHECKING:
    from starlette.applications import Starlette

    from features.push import EventPusher
    from features.sdk import FeatureClient
    from tidemark.settings import Settings

__all__ = ["ServedModel", "Server", "build_server"]

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class ServedModel:
    """One model a server serves: its scorer (canary state, prediction log) and its alias slots."""

    scorer: Scorer
    slots: ModelSlots


@dataclass
class Server:
    """The running parts of one serving process: every model it serves, by name (the first is
    the default, which ``/v1/predict`` means)."""

    app: Starlette
    models: dict[str, ServedModel]
    settings: Settings
    refresh_s: float = 10.0
    _stop: threading.Event = field(default_factory=threading.Event)
    _wake: threading.Event = field(default_factory=threading.Event)

    @property
    def default(self) -> str:
        return next(iter(self.models))

    @property
    def scorer(self) -> Scorer:
        """The default model's scorer."""
        return self.models[self.default].scorer

    @property
    def slots(self) -> ModelSlots:
        """The default model's slots."""
        return self.models[self.default].slots

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
                for served in self.models.values():
                    served.slots.refresh()

        for served in self.models.values():
            served.scorer.on_stale = self._wake.set

        def evidence() -> None:
            while not self._stop.wait(1.0):
                for served in self.models.values():
                    if served.scorer.evidence is not None:
                        served.scorer.evidence.flush()

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
        for served in self.models.values():
            served.scorer.close()
            if served.scorer.evidence is not None:
                served.scorer.evidence.flush()
            if served.scorer.log_sink is not None:
                served.scorer.log_sink.close()


def build_server(settings: Settings, *, models: Sequence[str] | None = None,
                 feature_client: FeatureClient | None = None, refresh_s: float = 10.0,
                 limits: ApiLimits | None = None, prediction_log: bool = True,
                 batching: dict[str, int] | None = None, admin: CanaryAdmin | Mapping[str, CanaryAdmin] | None = None,
                 inline: bool | None = None, torch_threads: int | None = None,
                 push_scored: Mapping[str, str] | None = None, replay: bool = False) -> Server:
    """Everything ``tidemark serve`` runs, for ``settings``; models are loaded before it returns.

    ``models``: the registered models to serve, in one process over one online store (default:
    ``settings.model_name``); the first is the default. Each gets its own alias slots, canary
    state, evidence and prediction log. ``admin``: each model's canary controller (one: the
    default model's).

    ``inline`` (default: when there is no CUDA device) scores requests on the event loop's thread
    and calls the champion directly: on a CPU the work is about a millisecond of GIL-bound Python
    and numpy, and a hop to a worker thread and on to a batcher costs more than it overlaps
    (``docs/benchmarks.md``). The challenger is called the same way: the canary compares the two
    models' latencies, so both must be timed on one path (behind its batcher, a CPU challenger of
    the champion's own architecture measured twice its p99 and was rolled back). Neither call has
    a timeout then. Otherwise requests run in worker threads and both models batch across them.

    ``POST /v1/push`` writes events through the feature client's :class:`features.push.EventPusher`.
    ``push_scored``: per model, the push source its scored rows are pushed to (a project's
    ``push_scored_events``; :mod:`serving.scored_events`); a source that no stream feature view
    reads is a :class:`tidemark.errors.ConfigError` here, before anything is served. ``replay``: a
    replay of recorded traffic reads each pushing model's rows as of their event times
    (:func:`serving.app.create_app`).
    """
    import torch
    from mlflow import MlflowClient

    from features.sdk import FeatureClient
    from serving.canary_evidence import EvidenceRecorder
    from serving.canary_state import CanaryStateStore

    fc = feature_client or FeatureClient(settings)
    reader = fc.online_reader()
    pusher = fc.event_pusher()
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
    names = list(dict.fromkeys(models or (settings.model_name,)))  # in order, each once
    metrics = _Metrics()
    scored_events = {name: _scored_events(name, source, pusher, metrics.push_error)  # checked before loading
                     for name, source in (push_scored or {}).items() if name in names}
    served: dict[str, ServedModel] = {}
    for name in names:
        slots = ModelSlots(client, name, batching=batching or {},
                           direct=(CHAMPION, CHALLENGER) if inline else (), base_backoff_s=max(refresh_s, 1.0))
        slots.refresh()
        sink = None
        if prediction_log:
            from serving.prediction_log import PredictionLog
            from serving.prediction_log_schema import model_log_root

            sink = PredictionLog(model_log_root(settings.offline_dir, name))
        canary = CanaryStateStore(redis_online.reader, name, available=lambda: not breaker.open)
        scorer = Scorer(slots, reader, canary, sink, on_scored=functools.partial(metrics.observe, name),
                        evidence=EvidenceRecorder(redis_online.writer, name))
        served[name] = ServedModel(scorer, slots)
    metrics.watch(served)
    metrics.watch_pushes(list(scored_events))

    def ready() -> tuple[bool, list[str]]:  # no I/O: the store-watch thread and the breaker keep the state
        reasons: list[str] = []
        for name, model in served.items():
            slots = model.slots
            reasons += [f"{name} {alias}: {error}" for alias, error in dict(slots.errors).items()]  # redacted
            reasons += [f"the {alias} alias of {name!r} is gone from the registry; still serving "
                        f"v{loaded.version}" for alias in sorted(slots.missing) if (loaded := slots.get(alias))]
        unloaded = [name for name, model in served.items() if model.slots.get(CHAMPION) is None]
        reasons[:0] = [f"no champion of {name!r} is loaded" for name in unloaded]
        if breaker.open:
            reasons.insert(0, f"online store unreachable: {redact(breaker.last_error)}")
            return False, reasons
        return not unloaded, reasons

    closers: list[Server] = []
    app = create_app({name: model.scorer for name, model in served.items()}, limits=limits, ready=ready,
                     metrics=metrics.render, on_shutdown=lambda: closers[0].close(), admin=admin,
                     admin_token=settings.admin_token, inline=inline, on_predict=metrics.request, store=breaker,
                     pusher=pusher, scored_events=scored_events, replay=replay)
    server = Server(app, served, settings, refresh_s)
    closers.append(server)
    return server


def _scored_events(model: str, source: str, pusher: EventPusher, on_error: Callable[[str, str], None]) -> ScoredEvents:
    try:
        return ScoredEvents(model, source, pusher, on_error)
    except UnknownPushSourceError as exc:
        raise ConfigError(f"model {model!r} declares push_scored_events: {source!r} in tidemark.yaml, but {exc}; "
                          "name a push source that a stream feature view reads (or drop the key), and "
                          "apply the repo") from None


class _Metrics:
    """Prometheus metrics of one process, by model: request latency by status class; rows, model
    time and scores per variant; and, read from the scorers when scraped, failed rows per variant
    and the rows and shadow batches dropped (:class:`_ScorerCollector`)."""

    def __init__(self) -> None:
        from prometheus_client import (
            GC_COLLECTOR,
            PLATFORM_COLLECTOR,
            PROCESS_COLLECTOR,
            CollectorRegistry,
            Counter,
            Histogram,
        )

        self.registry = CollectorRegistry()
        # the process's own CPU, memory, open files, GC and Python version, as every Prometheus
        # client exports them (a private registry has none of them unless they are added)
        for collector in (PROCESS_COLLECTOR, PLATFORM_COLLECTOR, GC_COLLECTOR):
            self.registry.register(collector)
        self.rows = Counter("tidemark_scored_rows", "Rows scored", ["model", "variant"], registry=self.registry)
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
        self._push_errors = Counter("tidemark_push_errors", "Scored requests whose events were not pushed (the "
                                    "predictions were answered), by reason", ["model", "reason"],
                                    registry=self.registry)
        self.disconnects = Counter("tidemark_client_disconnects", "POST predict clients gone before their body "
                                   "arrived (not an error of the server)", ["model"], registry=self.registry)

    def observe(self, model: str, variant: str, rows: int, seconds: float, scores: np.ndarray) -> None:
        self.rows.labels(model, variant).inc(rows)
        self.seconds.labels(model, variant).observe(seconds)
        histogram = self.scores.labels(model, variant)
        for s in scores[:64]:  # a sample per call keeps big batches cheap
            histogram.observe(float(s))

    def watch_pushes(self, models: Sequence[str]) -> None:
        """Show the push error series of every model that pushes its scored events from the first scrape."""
        for model in models:
            for reason in PUSH_ERROR_REASONS:
                self._push_errors.labels(model, reason)

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

    def watch(self, served: Mapping[str, ServedModel]) -> None:
        """Show every model's series from the first scrape, and export its scorer's error and drop
        counts, read at scrape time (they live on the scorers)."""
        for model in served:
            self._latency.update({(model, c): self._request_latency.labels(model, f"{c}xx") for c in (2, 4, 5)})
            self.disconnects.labels(model)
        self.registry.register(_ScorerCollector({name: m.scorer for name, m in served.items()}))

    def render(self) -> tuple[bytes, Any]:
        from prometheus_client import CONTENT_TYPE_LATEST, generate_latest

        return generate_latest(self.registry), CONTENT_TYPE_LATEST


class _ScorerCollector:
    """Counts the scorers keep themselves, as Prometheus counters by model: rows each variant
    failed on (the champion answered them, or the request got a 503), prediction-log rows dropped,
    and shadow batches dropped because the shadow queue was full; and the online store's state."""

    def __init__(self, scorers: Mapping[str, Scorer]) -> None:
        self.scorers = scorers

    def describe(self) -> list[Any]:
        return list(self.collect())

    def collect(self) -> Any:
        from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily

        errors = CounterMetricFamily("tidemark_variant_errors", "Rows a variant failed to score",
                                     labels=["model", "variant"])
        dropped = CounterMetricFamily("tidemark_prediction_log_dropped_rows", "Rows the prediction log dropped, "
                                      "by reason", labels=["model", "reason"])
        shadow = CounterMetricFamily("tidemark_shadow_dropped_batches",
                                     "Shadow batches dropped: the shadow queue was full", labels=["model"])
        missing = GaugeMetricFamily("tidemark_model_alias_missing", "1 when the alias is gone from the registry and "
                                    "the last loaded model still serves", labels=["model", "alias"])
        version = GaugeMetricFamily("tidemark_model_version_info", "1 for the registered version each alias serves "
                                    "now (join on it to tell variants' versions apart)",
                                    labels=["model", "alias", "version"])
        for model, scorer in self.scorers.items():
            for variant, stats in list(scorer.stats.items()):
                errors.add_metric([model, variant], stats.errors)
            sink = scorer.log_sink
            for reason, rows in (sink.dropped_by_reason if sink is not None else {}).items():
                dropped.add_metric([model, reason], rows)
            shadow.add_metric([model], scorer.shadow_dropped)
            for alias in scorer.slots.aliases:
                missing.add_metric([model, alias], 1 if alias in scorer.slots.missing else 0)
                loaded = scorer.slots.get(alias)
                if loaded is not None:
                    version.add_metric([model, alias, str(loaded.version)], 1)
        yield from (errors, dropped, shadow, missing, version)
        yield CounterMetricFamily("tidemark_online_corrupt_values", "Corrupt online values read (served as missing)",
                                  value=CORRUPT_VALUES.count)
        breaker = next(iter(self.scorers.values())).reader.redis.breaker  # one online store for every model
        if breaker is not None:
            yield GaugeMetricFamily("tidemark_online_store_up", "1 while the online store's circuit breaker is "
                                    "closed, 0 while it is open (reads fail at once)", value=0 if breaker.open else 1)
            yield GaugeMetricFamily("tidemark_online_store_slow", "1 while online reads are slow (scoring runs on "
                                    "worker threads)", value=1 if breaker.slow else 0)
            yield CounterMetricFamily("tidemark_online_store_breaker_opens", "Times the online store's circuit "
                                      "breaker opened", value=breaker.times_opened)
