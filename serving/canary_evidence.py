"""What every replica saw during a canary step, summed in Redis for the controller.

Each server adds its counts to one Redis hash per (model, canary id, step) about once a second:

    tidemark:canary:<model>:evidence:<canary id>:<step>
        <variant>:requests       rows scored            <variant>: champion | challenger | shadow | baseline
        <variant>:errors         rows the variant failed (the champion answered them instead)
        <variant>:lat:<i>        model calls whose time fell in latency bucket i (LATENCY_BOUNDS)
        <variant>:score:<j>      rows whose score fell in score bin j (SCORE_EDGES)

``baseline`` is the champion's copy of each shadow call, timed on the shadow's thread next to it:
in shadow mode the shadow's latency is compared with it, like with like (the request thread's
CPU time per call differs from the shadow thread's under load; ``serving.scorer``). It is never
logged or returned, and its ``requests`` count model calls made for timing only.

Counters only grow, so replicas never overwrite each other and the controller can read at any
time. Counts are kept per (canary id, step): a slow request or a queued shadow call that still
carries the previous step adds to that step, never to the new one. A server that can't reach
Redis keeps its counts (at most ``max_keys`` steps) and adds them on the next flush; a replica
that restarts loses at most one second of evidence.
"""

from __future__ import annotations

import logging
import threading
from collections import Counter
from dataclasses import dataclass
from typing import Any

import numpy as np

__all__ = ["LATENCY_BOUNDS", "SCORE_EDGES", "SHADOW_BASELINE", "EvidenceRecorder", "StepCounts", "read_step"]

log = logging.getLogger(__name__)

# Upper bounds (seconds) of latency buckets: 50 us to ~3 s, 12 % apart (bucket i holds (b[i-1], b[i]]).
LATENCY_BOUNDS: tuple[float, ...] = tuple(float(b) for b in 50e-6 * 1.12 ** np.arange(100))
# Interior edges of the score bins: fine near 0, where fraud scores live.
SCORE_EDGES: tuple[float, ...] = (0.001, 0.002, 0.005, 0.01, 0.02, 0.05, 0.1, 0.2, 0.5)
EVIDENCE_TTL_S = 7 * 86_400
SHADOW_BASELINE = "baseline"  # the variant name of the champion's timed copy of a shadow call


def evidence_key(prefix: str, model: str, canary_id: str, step: int) -> str:
    return f"{prefix}{model}:evidence:{canary_id}:{step}"


class EvidenceRecorder:
    """Per-process counts for the current step, flushed to Redis by :meth:`flush`."""

    def __init__(self, redis_client: Any, model: str, *, key_prefix: str = "tidemark:canary:",
                 max_keys: int = 16) -> None:
        self.redis, self.model, self.prefix, self.max_keys = redis_client, model, key_prefix, max_keys
        self._counts: dict[tuple[str, int], Counter[str]] = {}
        self._lock = threading.Lock()

    def record(self, canary_id: str, step: int, variant: str, *, rows: int, errors: int = 0,
               seconds: float | None = None, scores: np.ndarray | None = None) -> None:
        """Count one model call of ``variant`` (cheap: a few dict updates under a lock)."""
        with self._lock:
            counts = self._counts.get((canary_id, step))
            if counts is None:
                if len(self._counts) >= self.max_keys:  # Redis down for many steps: drop the oldest
                    del self._counts[next(iter(self._counts))]
                counts = self._counts[(canary_id, step)] = Counter()
            counts[f"{variant}:requests"] += rows
            if errors:
                counts[f"{variant}:errors"] += errors
            if seconds is not None:
                counts[f"{variant}:lat:{int(np.searchsorted(LATENCY_BOUNDS, seconds))}"] += 1
            if scores is not None and len(scores):
                bins = np.bincount(np.searchsorted(SCORE_EDGES, scores, side="right"), minlength=len(SCORE_EDGES) + 1)
                for j in np.flatnonzero(bins):
                    counts[f"{variant}:score:{j}"] += int(bins[j])

    def flush(self) -> bool:
        """Add the counts to Redis; on failure keep them for the next try. Returns success."""
        with self._lock:
            if not self._counts:
                return True
            pending, self._counts = self._counts, {}
        try:
            pipe = self.redis.pipeline(transaction=False)
            for step, counts in pending.items():
                key = evidence_key(self.prefix, self.model, *step)
                for field, value in counts.items():
                    pipe.hincrby(key, field, value)
                pipe.expire(key, EVIDENCE_TTL_S)
            pipe.execute()
            return True
        except Exception as exc:  # noqa: BLE001  (Redis down: keep the counts, serve on)
            log.warning("canary evidence not flushed (%s); kept for the next try", exc)
            with self._lock:
                for step, counts in pending.items():
                    self._counts.setdefault(step, Counter()).update(counts)
            return False


@dataclass(frozen=True)
class StepCounts:
    """One variant's evidence for a step, summed over replicas."""

    requests: int
    errors: int
    latency_counts: np.ndarray   # int64[len(LATENCY_BOUNDS) + 1]
    score_counts: np.ndarray     # int64[len(SCORE_EDGES) + 1]


def read_step(redis_client: Any, model: str, canary_id: str, step: int, *,
              key_prefix: str = "tidemark:canary:") -> dict[str, StepCounts]:
    """Every variant's summed counts for the step (variants with no rows are absent)."""
    raw = redis_client.hgetall(evidence_key(key_prefix, model, canary_id, step))
    out: dict[str, dict[str, Any]] = {}
    for field_b, value_b in raw.items():
        field = field_b.decode() if isinstance(field_b, bytes) else field_b
        variant, kind, *index = field.split(":")
        entry = out.setdefault(variant, {"requests": 0, "errors": 0,
                                         "lat": np.zeros(len(LATENCY_BOUNDS) + 1, dtype=np.int64),
                                         "score": np.zeros(len(SCORE_EDGES) + 1, dtype=np.int64)})
        if kind in ("requests", "errors"):
            entry[kind] = int(value_b)
        elif kind in ("lat", "score") and index:
            entry[kind][int(index[0])] = int(value_b)
    return {v: StepCounts(e["requests"], e["errors"], e["lat"], e["score"]) for v, e in out.items()}
