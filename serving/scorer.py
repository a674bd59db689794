"""Score a batch of requested rows: online features, routing, champion / challenger, shadow, log.

    rows (join keys + request fields)
      │  OnlineReader: one Redis round trip for the union of both models' features
      │  routing.to_challenger(customer_id, canary id, weight): sticky, reproducible offline
      ├── champion rows ──► champion module
      ├── challenger rows ─► challenger module (an error or no model: the champion answers,
      │                      and the failure is counted against the challenger)
      └── shadow mode ────► challenger on every row, off the response path; logged, never returned
      ▼
    scores + variant + model version per row; the prediction log gets every scored row

HTTP lives in :mod:`serving.app`; this module knows nothing about it.
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import TYPE_CHECKING, Any

import numpy as np
import pandas as pd

from features.errors import FeatureStoreError
from serving.errors import NotReadyError
from serving.model_slots import LoadedModel, ModelSlots

if TYPE_CHECKING:
    from features.online_reader import OnlineReader, ReadPlan

__all__ = ["CHALLENGER", "CHAMPION", "SHADOW", "Scored", "Scorer"]

log = logging.getLogger(__name__)

CHAMPION, CHALLENGER, SHADOW = "champion", "challenger", "shadow"
ROUTING_KEY = "customer_id"


@dataclass(frozen=True)
class Scored:
    """One request's answer, row by row."""

    scores: np.ndarray               # float64 P(fraud)
    variants: list[str]              # "champion" | "challenger"
    versions: list[str]
    features_found: np.ndarray       # bool: every feature view had a live value for the row


@dataclass
class VariantStats:
    """Counters the canary controller and /metrics read (per variant)."""

    rows: int = 0
    errors: int = 0
    seconds: float = 0.0


@dataclass
class Scorer:
    """Everything a request needs, wired once per process."""

    slots: ModelSlots
    reader: OnlineReader
    canary: Any = None        # serving.canary_state.CanaryStateStore, or None: champion only
    log_sink: Any = None      # serving.prediction_log.PredictionLog, or None
    on_scored: Callable[[str, int, float, np.ndarray], None] | None = None  # metrics hook
    evidence: Any = None      # serving.canary_evidence.EvidenceRecorder: counts for the canary controller
    stats: dict[str, VariantStats] = field(default_factory=lambda: {v: VariantStats() for v in
                                                                     (CHAMPION, CHALLENGER, SHADOW)})
    _plans: dict[tuple[str, ...], ReadPlan] = field(default_factory=dict)
    _shadow: ThreadPoolExecutor = field(default_factory=lambda: ThreadPoolExecutor(1, "shadow"))
    _lock: threading.Lock = field(default_factory=threading.Lock)

    def request_columns(self) -> tuple[str, ...]:
        """Fields a request must carry besides the join keys (both live models' needs)."""
        models = [m for m in (self.slots.get(CHAMPION), self.slots.get(CHALLENGER)) if m is not None]
        return tuple(sorted({c for m in models for c in m.request_columns}))

    def score(self, rows: pd.DataFrame, request_id: str) -> Scored:
        """Score validated ``rows`` (join keys and request fields, one row per payment)."""
        champion = self.slots.get(CHAMPION)
        if champion is None:
            raise NotReadyError("no champion model is loaded; promote one (`tidemark promote --first`) "
                                "or wait for the server to load it")
        state = self._canary_state()
        challenger = self._challenger(state)
        plan = self._plan(champion.features)  # the champion's features must resolve
        if challenger is not None:
            try:
                plan = self._plan(tuple(dict.fromkeys((*champion.features, *challenger.features))))
            except FeatureStoreError as exc:  # a challenger reading features the store lacks: champion only
                self.stats[CHALLENGER].errors += 1
                log.error("challenger v%s can't be served: %s", challenger.version, exc)
                challenger = None
        values, found = self.reader.read_frame(plan, rows)
        inputs = pd.concat([rows.reset_index(drop=True), values.drop(columns=[c for c in values.columns
                                                                          if c in rows.columns])], axis=1)
        to_challenger = np.zeros(len(rows), dtype=bool)
        if challenger is not None and state.mode == "canary":
            from serving.routing import to_challenger as route

            to_challenger = route(rows[ROUTING_KEY].to_numpy(), state.canary_id, state.weight_pct)
        scores = np.empty(len(rows), dtype=np.float64)
        served_by = np.where(to_challenger, CHALLENGER, CHAMPION).astype(object)
        if to_challenger.any():
            assert challenger is not None
            ok = self._run(challenger, CHALLENGER, inputs[to_challenger], state)
            if ok is None:  # the challenger failed: the champion answers these rows too
                served_by[to_challenger] = CHAMPION
                to_challenger[:] = False
            else:
                scores[to_challenger] = ok
        champion_rows = ~to_challenger
        if champion_rows.any():
            result = self._run(champion, CHAMPION, inputs[champion_rows], state)
            if result is None:
                raise NotReadyError(f"the champion (v{champion.version}) failed to score; see the server log")
            scores[champion_rows] = result
        versions = [challenger.version if v == CHALLENGER and challenger else champion.version for v in served_by]
        all_found = found.to_numpy().all(axis=1) if found.shape[1] else np.ones(len(rows), dtype=bool)
        scored = Scored(scores, list(served_by), versions, all_found)
        self._log(request_id, inputs, scored)
        if challenger is not None and state.mode == "shadow":
            self._shadow.submit(self._shadow_score, challenger, inputs, request_id, state)
        return scored

    def drain_shadow(self, timeout_s: float = 10.0) -> None:
        """Wait until the shadow work queued so far has run (one worker: FIFO)."""
        self._shadow.submit(lambda: None).result(timeout=timeout_s)

    def close(self) -> None:
        """Finish shadow work in flight."""
        self._shadow.shutdown(wait=True)

    def _canary_state(self) -> Any:
        if self.canary is None:
            return _Off()
        state, _degraded = self.canary.read()
        return state

    def _challenger(self, state: Any) -> LoadedModel | None:
        if state.mode not in ("canary", "shadow"):
            return None
        challenger = self.slots.get(CHALLENGER)
        if challenger is None or (state.challenger_version and challenger.version != str(state.challenger_version)):
            return None  # the loaded challenger is not the one under test: champion only
        return challenger

    def _plan(self, features: tuple[str, ...]) -> ReadPlan:
        plan = self._plans.get(features)
        if plan is None:
            with self._lock:
                plan = self._plans[features] = self.reader.plan(list(features))
        return plan

    def _run(self, model: LoadedModel, variant: str, inputs: pd.DataFrame, state: Any) -> np.ndarray | None:
        started = time.perf_counter()
        stats = self.stats[variant]
        counting = self.evidence is not None and state.mode != "off"
        try:
            scores = model.predict_proba(inputs)
        except Exception:  # a broken model must not fail the request (log.exception records it)
            stats.errors += 1
            log.exception("%s v%s failed to score %d rows", variant, model.version, len(inputs))
            if counting:
                self.evidence.record(state.canary_id, state.step, variant, rows=len(inputs), errors=len(inputs))
            return None
        seconds = time.perf_counter() - started
        stats.rows += len(inputs)
        stats.seconds += seconds
        if counting:
            self.evidence.record(state.canary_id, state.step, variant, rows=len(inputs), seconds=seconds,
                                 scores=scores)
        if self.on_scored is not None:
            self.on_scored(variant, len(inputs), seconds, scores)
        return scores

    def _shadow_score(self, challenger: LoadedModel, inputs: pd.DataFrame, request_id: str, state: Any) -> None:
        scores = self._run(challenger, SHADOW, inputs, state)
        if scores is not None:
            self._log(request_id, inputs, Scored(scores, [SHADOW] * len(inputs), [challenger.version] * len(inputs),
                                                 np.ones(len(inputs), dtype=bool)))

    def _log(self, request_id: str, inputs: pd.DataFrame, scored: Scored) -> None:
        if self.log_sink is None:
            return
        columns: dict[str, Any] = {c: inputs[c].to_numpy() for c in inputs.columns}
        columns.update({
            "event_timestamp": np.full(len(inputs), np.datetime64(datetime.now(UTC).replace(tzinfo=None), "us")),
            "request_id": np.full(len(inputs), request_id, dtype=object),
            "score": scored.scores, "variant": np.asarray(scored.variants, dtype=object),
            "model_version": np.asarray(scored.versions, dtype=object),
        })
        try:
            self.log_sink.append(columns)
        except Exception:  # logging must never fail a response
            log.exception("prediction log append failed for request %s", request_id)


class _Off:
    mode = "off"
    step = 0
    weight_pct = 0.0
    canary_id = ""
    challenger_version = None
