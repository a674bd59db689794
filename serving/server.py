"""``tidemark serve``: wire the scorer, the model slots, the canary state and the prediction log
into the ASGI app, and keep them fresh in the background.

    every refresh_s:  ModelSlots.refresh()   alias moved? load + warm the new version, then swap
    every request:    CanaryStateStore.read() (cached ~1 s), OnlineReader, models, PredictionLog;
                      on the event loop's thread on a CPU, in worker threads with a GPU
    /readyz:          a champion is loaded, and the online store answers a PING
"""

from __future__ import annotations

import logging
import threading
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

import numpy as np

from serving.app import ApiLimits, CanaryAdmin, create_app
from serving.model_slots import ModelSlots
from serving.scorer import CHAMPION, Scorer

if TYPE_CHECKING:
    from starlette.applications import Starlette

    from features.sdk import FeatureClient
    from features.settings import Settings

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

    def start_refresh(self) -> None:
        """Poll the registry's aliases every ``refresh_s`` seconds, and add canary evidence to
        Redis every second, in daemon threads."""
        def refresh() -> None:
            while not self._stop.wait(self.refresh_s):
                self.slots.refresh()

        def evidence() -> None:
            while not self._stop.wait(1.0):
                if self.scorer.evidence is not None:
                    self.scorer.evidence.flush()

        for target, name in ((refresh, "model-refresh"), (evidence, "canary-evidence")):
            threading.Thread(target=target, name=name, daemon=True).start()

    def close(self) -> None:
        """Stop refreshing, finish shadow work, flush the prediction log. Idempotent."""
        if self._stop.is_set():
            return
        self._stop.set()
        self.scorer.close()
        if self.scorer.evidence is not None:
            self.scorer.evidence.flush()
        if self.scorer.log_sink is not None:
            self.scorer.log_sink.close()


def build_server(settings: Settings, *, feature_client: FeatureClient | None = None, refresh_s: float = 10.0,
                 limits: ApiLimits | None = None, prediction_log: bool = True,
                 batching: dict[str, int] | None = None, admin: CanaryAdmin | None = None,
                 inline: bool | None = None) -> Server:
    """Everything ``tidemark serve`` runs, for ``settings``; models are loaded before it returns.

    ``inline`` (default: when there is no CUDA device) scores requests on the event loop's thread
    and calls the champion directly: on a CPU the work is about a millisecond of GIL-bound Python
    and numpy, and a hop to a worker thread and on to a batcher costs more than it overlaps
    (``docs/benchmarks.md``). The challenger keeps its micro-batcher either way, so its timeout
    holds. Otherwise requests run in worker threads and both models batch across them.
    """
    import torch
    from mlflow import MlflowClient

    from features.sdk import FeatureClient
    from serving.canary_evidence import EvidenceRecorder
    from serving.canary_state import CanaryStateStore

    fc = feature_client or FeatureClient(settings)
    reader = fc.online_reader()
    redis_online = reader.redis
    client = MlflowClient(tracking_uri=settings.tracking_uri, registry_uri=settings.tracking_uri)
    if inline is None:
        inline = not torch.cuda.is_available()
    slots = ModelSlots(client, settings.model_name, batching=batching or {}, direct=(CHAMPION,) if inline else ())
    slots.refresh()
    sink = None
    if prediction_log:
        import pyarrow as pa

        from serving.app import TRANSACTION_ID
        from serving.prediction_log import PredictionLog

        sink = PredictionLog(settings.offline_dir / "prediction_log", column_types={TRANSACTION_ID: pa.int64()})
    metrics = _Metrics()
    scorer = Scorer(slots, reader, CanaryStateStore(redis_online.reader, settings.model_name), sink,
                    on_scored=metrics.observe, evidence=EvidenceRecorder(redis_online.writer, settings.model_name))

    def ready() -> tuple[bool, list[str]]:
        reasons = [f"{alias}: {error}" for alias, error in dict(slots.errors).items()]
        if slots.get(CHAMPION) is None:
            reasons.insert(0, f"no champion of {settings.model_name!r} is loaded")
        try:
            redis_online.ping()
        except Exception as exc:  # noqa: BLE001  (any failure means not ready)
            reasons.insert(0, f"online store unreachable: {exc}")
            return False, reasons
        return slots.get(CHAMPION) is not None, reasons

    closers: list[Server] = []
    app = create_app(scorer, limits=limits, ready=ready, metrics=metrics.render,
                     on_shutdown=lambda: closers[0].close(), admin=admin, admin_token=settings.admin_token,
                     inline=inline)
    server = Server(app, scorer, slots, settings, refresh_s)
    closers.append(server)
    return server


class _Metrics:
    """Prometheus metrics of one process: latency, rows, errors and scores per variant."""

    def __init__(self) -> None:
        from prometheus_client import CollectorRegistry, Counter, Histogram

        self.registry = CollectorRegistry()
        self.rows = Counter("tidemark_scored_rows", "Rows scored", ["variant"], registry=self.registry)
        self.seconds = Histogram("tidemark_model_seconds", "Model time per call", ["variant"],
                                 buckets=(1e-4, 2.5e-4, 5e-4, 1e-3, 2.5e-3, 5e-3, 1e-2, 2.5e-2, 0.1),
                                 registry=self.registry)
        self.scores = Histogram("tidemark_score", "Fraud scores", ["variant"],
                                buckets=(0.001, 0.005, 0.01, 0.05, 0.1, 0.25, 0.5, 0.75, 0.9), registry=self.registry)

    def observe(self, variant: str, rows: int, seconds: float, scores: np.ndarray) -> None:
        self.rows.labels(variant).inc(rows)
        self.seconds.labels(variant).observe(seconds)
        histogram = self.scores.labels(variant)
        for s in scores[:64]:  # a sample per call keeps big batches cheap
            histogram.observe(float(s))

    def render(self) -> tuple[bytes, Any]:
        from prometheus_client import CONTENT_TYPE_LATEST, generate_latest

        return generate_latest(self.registry), CONTENT_TYPE_LATEST
