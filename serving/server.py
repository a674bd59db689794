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
from typing import TYPE_CHECKING

from features.circuit_breaker import BreakerPolicy
from features.errors import OnlineStoreUnavailable, UnknownPushSourceError
from features.redaction import redact
from serving.app import ApiLimits, CanaryAdmin, create_app
from serving.metrics import ServingMetrics
from serving.model_slots import ModelSlots
from serving.scored_events import ScoredEvents
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
    metrics: ServingMetrics | None = None
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

        def evidence() -> None:  # and the metrics: a worker that is not scraped shows its state within a second
            while not self._stop.wait(1.0):
                for served in self.models.values():
                    if served.scorer.evidence is not None:
                        served.scorer.evidence.flush()
                if self.metrics is not None:
                    self.metrics.sync()

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
    metrics = ServingMetrics()
    metrics.watch_breaker(breaker)
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
                        evidence=EvidenceRecorder(redis_online.writer, name), on_read=functools.partial(metrics.read, name))
        served[name] = ServedModel(scorer, slots)
    metrics.watch(served, pushing=list(scored_events))

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
    server = Server(app, served, settings, refresh_s, metrics)
    closers.append(server)
    return server


def _scored_events(model: str, source: str, pusher: EventPusher, on_error: Callable[[str, str], None]) -> ScoredEvents:
    try:
        return ScoredEvents(model, source, pusher, on_error)
    except UnknownPushSourceError as exc:
        raise ConfigError(f"model {model!r} declares push_scored_events: {source!r} in tidemark.yaml, but {exc}; "
                          "name a push source that a stream feature view reads (or drop the key), and "
                          "apply the repo") from None
