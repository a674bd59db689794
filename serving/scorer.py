"""Score a batch of requested rows: online features, routing, champion / challenger, shadow, log.

    rows (join keys + request fields)
      │  OnlineReader: one Redis round trip for the union of both models' features
      │  routing.to_challenger(routing key, canary id, weight): sticky, reproducible offline
      │  (the routing key, join keys and request fields are the champion's model contract)
      ├── champion rows ──► champion module
      ├── challenger rows ─► challenger module (an error or no model: the champion answers,
      │                      and the failure is counted against the challenger)
      └── shadow mode ────► challenger on every row, off the response path; logged, never returned
                             (and the champion's copy of the same rows on the same thread: the
                             latency baseline the shadow is judged against, never logged)
      ▼
    predictions (by task) + variant + model version per row; the prediction log gets every row

HTTP lives in :mod:`serving.app`; this module knows nothing about it.
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable, Mapping
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from datetime import datetime
from typing import TYPE_CHECKING, Any

import numpy as np
import pandas as pd
import pyarrow as pa

from features.errors import FeatureStoreError
from serving.canary_evidence import SHADOW_BASELINE
from serving.errors import NotReadyError, OverloadedError
from serving.model_contract import ModelContract
from serving.model_slots import LoadedModel, ModelSlots
from serving.prediction_log_schema import prediction_columns
from serving.request_rows import RowSchema

if TYPE_CHECKING:
    from features.online_reader import OnlineReader, ReadPlan
    from serving.prediction_log import PredictionLog

__all__ = ["CHALLENGER", "CHAMPION", "SHADOW", "SHADOW_BASELINE", "Scored", "Scorer"]

log = logging.getLogger(__name__)

CHAMPION, CHALLENGER, SHADOW = "champion", "challenger", "shadow"
PROMOTION_GRACE_S = 300.0  # how long a promotion's state overrides the loaded champion (Scorer._promoted)


@dataclass(frozen=True)
class Scored:
    """One request's answer, row by row."""

    scores: np.ndarray               # float64: (n,) P(positive) or value; (n, k) class probabilities
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
    log_sink: PredictionLog | None = None
    on_scored: Callable[[str, int, float, np.ndarray], None] | None = None  # metrics hook
    evidence: Any = None      # serving.canary_evidence.EvidenceRecorder: counts for the canary controller
    on_read: Callable[[float, bool], None] | None = None  # metrics hook: an online read's seconds, and ok
    stats: dict[str, VariantStats] = field(default_factory=lambda: {v: VariantStats() for v in
                                                                     (CHAMPION, CHALLENGER, SHADOW)})
    _plans: dict[tuple[str, ...], ReadPlan] = field(default_factory=dict)
    _shadow: ThreadPoolExecutor = field(default_factory=lambda: ThreadPoolExecutor(1, "shadow"))
    _lock: threading.Lock = field(default_factory=threading.Lock)

    max_shadow_pending: int = 64  # shadow batches waiting; more are dropped (and counted), never queued
    shadow_dropped: int = 0
    challenger_timeout_s: float = 0.05  # a slower challenger is a failure: the champion answers
    on_stale: Callable[[], None] | None = None  # the canary state names a champion not loaded: refresh now
    _shadow_pending: int = 0
    # One shadow batch in this many also times the champion's copy of it (the shadow's latency
    # baseline): each is a third model call per request; on every batch, shadow mode at 500/s on 2
    # cores answered ~330 requests/s where it had answered ~480.
    shadow_baseline_every: int = 4
    _shadow_calls: int = 0  # shadow batches run: which get a baseline call, and in which order
    _stale_wake_at: float = 0.0
    _promotion: tuple[Any, float] = (None, 0.0)  # ((canary id, revision), grace ends, epoch seconds)
    _schema: tuple[ModelContract | None, RowSchema] | None = None
    _types: dict[int, tuple[ModelContract, dict[str, pa.DataType]]] = field(default_factory=dict)  # by id(contract)

    @property
    def name(self) -> str:
        """The registered model this scorer serves."""
        return self.slots.name

    def contract(self) -> ModelContract | None:
        """The champion's model contract: what a request carries and what a prediction is (None
        until a champion is loaded)."""
        champion = self.slots.get(CHAMPION)
        return champion.contract if champion else None

    def request_columns(self) -> tuple[str, ...]:
        """Fields a request must carry besides the join keys: the champion's. A challenger needing
        more fails on its rows (the champion answers) rather than changing the API for everyone."""
        contract = self.contract()
        return tuple(sorted(contract.request_columns)) if contract else ()

    def text_columns(self) -> frozenset[str]:
        """Request fields that are categories (text) for the champion."""
        contract = self.contract()
        return frozenset(contract.text_columns) & frozenset(contract.request_columns) if contract else frozenset()

    def row_schema(self) -> RowSchema:
        """What a request row carries for the champion (kept per contract: built once per load)."""
        contract = self.contract()
        cached = self._schema
        if cached is not None and cached[0] is contract:
            return cached[1]
        if contract is None:
            return RowSchema((), ())
        label_ids = contract.label.join_keys if contract.label else ()
        schema = RowSchema(tuple(zip(contract.join_keys, contract.key_kinds, strict=True)),
                           tuple(sorted(contract.request_columns)),
                           frozenset(contract.text_columns) & frozenset(contract.request_columns), label_ids)
        self._schema = (contract, schema)
        return schema

    def score(self, rows: Mapping[str, np.ndarray] | pd.DataFrame, request_id: str, *,
              at_us: np.ndarray | None = None) -> Scored:
        """Score validated ``rows``: join keys and request fields, one row per payment, as equal-length
        numpy columns (numbers as int64/float64 with NaN for unknown, text as objects with None), the
        way :mod:`serving.app` builds them; a DataFrame is converted to that. ``at_us``: per row, the
        instant its features are read as of (a replay's; default now)."""
        request = _columns(rows)
        state = self._canary_state()
        champion = self._champion(state)
        if champion is None:
            raise NotReadyError("no champion model is loaded; promote one (`tidemark promote --first`) "
                                "or wait for the server to load it")
        contract = champion.contract
        n = _length(request)
        challenger = self._challenger(state)
        plan = self._plan(champion.features)  # the champion's features must resolve
        broken = False
        if challenger is not None:
            try:
                if challenger.features != champion.features:
                    plan = self._plan(tuple(dict.fromkeys((*champion.features, *challenger.features))))
                missing = [c for c in challenger.request_columns if c not in request]
                if missing:
                    raise NotReadyError(f"requests don't carry {missing}")
                if (challenger.contract.task, challenger.contract.classes) != (contract.task, contract.classes):
                    raise NotReadyError(f"it predicts {challenger.contract.task} {list(challenger.contract.classes)}, "
                                        f"the champion {contract.task} {list(contract.classes)}")
            except (FeatureStoreError, NotReadyError) as exc:  # the challenger can't be served: champion only
                log.error("challenger v%s can't be served: %s", challenger.version, exc)
                broken = True
        values, found = self._read(plan, request, at_us)
        inputs = dict(request)  # a request field wins over a stored feature of the same name
        for name, column in values.items():
            inputs.setdefault(name, column)
        to_challenger = np.zeros(n, dtype=bool)
        if challenger is not None and state.mode == "canary":
            from serving.routing import to_challenger as route

            to_challenger = route(request[contract.routing_key], state.canary_id, state.weight_pct)
        if broken:  # counted against the challenger, so the controller rolls it back
            self._failed(CHALLENGER if state.mode == "canary" else SHADOW, state,
                         int(to_challenger.sum()) if state.mode == "canary" else n)
            to_challenger[:] = False
            challenger = None
        scores = np.empty((n, contract.width) if contract.task == "multiclass" else n, dtype=np.float64)
        served_by = np.where(to_challenger, CHALLENGER, CHAMPION).astype(object)
        if to_challenger.any():
            assert challenger is not None
            ok = self._run(challenger, CHALLENGER, _take(inputs, to_challenger), state, self.challenger_timeout_s)
            if ok is None:  # the challenger failed: the champion answers these rows too
                served_by[to_challenger] = CHAMPION
                to_challenger[:] = False
            else:
                scores[to_challenger] = ok
        champion_rows = ~to_challenger
        if champion_rows.any():
            result = self._run(champion, CHAMPION, _take(inputs, champion_rows), state)
            if result is None:
                raise NotReadyError(f"the champion (v{champion.version}) failed to score; see the server log")
            scores[champion_rows] = result
        versions = [challenger.version if v == CHALLENGER and challenger else champion.version for v in served_by]
        all_found = np.asarray(found.all(axis=1), dtype=bool) if found.shape[1] else np.ones(n, dtype=bool)
        scored = Scored(scores, list(served_by), versions, all_found)
        self._log(request_id, inputs, scored, contract)
        if challenger is not None and state.mode == "shadow":
            self._submit_shadow(challenger, champion, inputs, request_id, state)
        return scored

    def _read(self, plan: ReadPlan, request: Columns, at_us: np.ndarray | None) -> tuple[dict[str, np.ndarray], np.ndarray]:
        if self.on_read is None:
            return self.reader.read_columns(plan, request, at_us=at_us)
        started = time.perf_counter()
        try:
            out = self.reader.read_columns(plan, request, at_us=at_us)
        except FeatureStoreError:
            self.on_read(time.perf_counter() - started, False)
            raise
        self.on_read(time.perf_counter() - started, True)
        return out

    def _submit_shadow(self, challenger: LoadedModel, champion: LoadedModel, inputs: Columns, request_id: str,
                       state: Any) -> None:
        with self._lock:
            if self._shadow_pending >= self.max_shadow_pending:
                self.shadow_dropped += 1  # shadow work must never slow or grow the server
                return
            self._shadow_pending += 1
        try:
            self._shadow.submit(self._shadow_score, challenger, champion, inputs, request_id, state)
        except RuntimeError:  # shutting down
            with self._lock:
                self._shadow_pending -= 1

    def drain_shadow(self, timeout_s: float = 10.0) -> None:
        """Wait until the shadow work queued so far has run (one worker: FIFO)."""
        self._shadow.submit(lambda: None).result(timeout=timeout_s)

    def close(self) -> None:
        """Drop queued shadow work (it is never returned to anyone) and stop its worker."""
        self._shadow.shutdown(wait=False, cancel_futures=True)

    def _canary_state(self) -> Any:
        if self.canary is None:
            from serving.canary_state import CanaryState

            return CanaryState.off(self.slots.name)
        state, _degraded = self.canary.read()
        return state

    def _champion(self, state: Any) -> LoadedModel | None:
        """The loaded champion, unless a promotion just named another (:meth:`_promoted`): the
        controller writes that state before it moves the alias. Then the refresh is woken (at most
        once a second) and, until it has loaded the new version, the challenger slot serves it when
        it holds that version, so a promotion from 100 % never sends traffic back to the old model."""
        champion = self.slots.get(CHAMPION)
        wanted = self._promoted(state)
        if wanted is None or champion is None or champion.version == wanted:
            return champion
        now = time.monotonic()
        if self.on_stale is not None and now >= self._stale_wake_at:
            self._stale_wake_at = now + 1.0
            self.on_stale()
        promoted = self.slots.get(CHALLENGER)
        return promoted if promoted is not None and promoted.version == wanted else champion

    def _promoted(self, state: Any) -> str | None:
        """The version a promotion made champion less than ``PROMOTION_GRACE_S`` ago, else None.

        A promotion ends a canary with ``mode="off"`` and champion = challenger version, stamped
        ``step_started_at``. Past the grace the regular alias poll is trusted again, so a later
        promotion by hand in the registry is not fought by a state that names an older version.
        """
        if (state.mode != "off" or not state.champion_version or state.champion_version != state.challenger_version
                or not state.step_started_at):
            return None
        key = (state.canary_id, state.revision)
        if self._promotion[0] != key:  # parse the time once per state written, not per request
            until = datetime.fromisoformat(state.step_started_at).timestamp() + PROMOTION_GRACE_S
            self._promotion = (key, until)
        return str(state.champion_version) if time.time() < self._promotion[1] else None

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

    def _run(self, model: LoadedModel, variant: str, inputs: Columns, state: Any,
             timeout_s: float = 5.0) -> np.ndarray | None:
        # The canary's latency evidence: a model called directly (a CPU node) is timed by the CPU
        # time of the call on its own thread. Wall time would charge the shadow, which runs on a
        # worker thread, for the GIL that the request thread holds meanwhile: a challenger of the
        # champion's architecture measured 1.5-2x its p99 and was rolled back. A batched model
        # (GPU) is timed from submit to result, queueing included, the same for both variants.
        # Thread CPU is still not the same on both threads under load: see _shadow_score.
        clock = _latency_clock(model)
        stats, n = self.stats[variant], _length(inputs)
        counting = self.evidence is not None and state.mode != "off"
        started, clock_started = time.perf_counter(), clock()
        try:
            scores = _checked_predict(model, inputs, n, timeout_s)
            latency_s = clock() - clock_started  # the span _time_baseline times too: like with like
        except OverloadedError:
            if variant == CHAMPION:
                raise  # a 503 that says so, not a model failure
            self._failed(variant, state, n)
            return None
        except Exception:  # a broken model must not fail the request (log.exception records it)
            log.exception("%s v%s failed to score %d rows", variant, model.version, n)
            self._failed(variant, state, n)
            return None
        seconds = time.perf_counter() - started
        stats.rows += n
        stats.seconds += seconds
        per_row = scores if scores.ndim == 1 else scores.max(axis=1)  # multiclass: the top class's probability
        if counting:
            self.evidence.record(state.canary_id, state.step, variant, rows=n, seconds=latency_s, scores=per_row)
        if self.on_scored is not None:
            self.on_scored(variant, n, seconds, per_row)
        return scores

    def _failed(self, variant: str, state: Any, rows: int) -> None:
        self.stats[variant].errors += rows
        if self.evidence is not None and state.mode != "off" and rows:
            self.evidence.record(state.canary_id, state.step, variant, rows=rows, errors=rows)

    def _shadow_score(self, challenger: LoadedModel, champion: LoadedModel, inputs: Columns, request_id: str,
                      state: Any) -> None:
        """The shadow call, and the champion's copy of it on this thread as its latency baseline.

        The shadow thread's CPU time per call is not the request thread's: under load it runs beside
        the request thread's work on the other core, and its tail grows (SMT siblings, caches, the
        futex hand-offs of the GIL when torch releases it). At 500 requests/s on 2 cores a challenger
        of the champion's own weights measured the champion's p50 (0.30 ms) but a p99 of 1.28
        against 0.76 ms, and was rolled back. Timing the champion on the same rows, on this thread,
        next to the shadow call compares like with like; the order alternates so that neither call
        always finds the inputs warm in cache. One batch in ``shadow_baseline_every`` gets the
        baseline call (a fixed share, not one chosen by load, so the sample stays unbiased). The
        baseline is only timed (never logged or answered), and only while evidence is recorded.
        """
        with self._lock:
            self._shadow_pending -= 1
            batch = self._shadow_calls
            self._shadow_calls += 1
        every = max(1, self.shadow_baseline_every)
        timed, champion_first = batch % every == 0, (batch // every) % 2 == 1
        if timed and champion_first:
            self._time_baseline(champion, inputs, state)
        scores = self._run(challenger, SHADOW, inputs, state)
        if timed and not champion_first:
            self._time_baseline(champion, inputs, state)
        if scores is not None:
            n = len(scores)
            self._log(request_id, inputs, Scored(scores, [SHADOW] * n, [challenger.version] * n, np.ones(n, dtype=bool)),
                      challenger.contract)

    def _time_baseline(self, champion: LoadedModel, inputs: Columns, state: Any) -> None:
        """Record the champion's time on ``inputs``, on this thread, as the shadow's latency baseline."""
        if self.evidence is None or state.mode != "shadow":
            return
        clock, n = _latency_clock(champion), _length(inputs)
        started = clock()
        try:
            _checked_predict(champion, inputs, n, 5.0)
        except Exception as exc:  # noqa: BLE001  (the request path reports the champion's failures)
            log.debug("champion v%s failed its shadow baseline call: %s", champion.version, exc)
            return
        self.evidence.record(state.canary_id, state.step, SHADOW_BASELINE, rows=n, seconds=clock() - started)

    def _log(self, request_id: str, inputs: Columns, scored: Scored, contract: ModelContract) -> None:
        if self.log_sink is None:
            return
        n = len(scored.scores)
        columns: dict[str, Any] = dict(inputs)
        columns.update({"request_id": [request_id] * n, "variant": scored.variants, "model_version": scored.versions})
        columns.update(prediction_columns(contract, scored.scores))
        try:  # one list append per column; the log's writer converts them for many requests at once
            self.log_sink.append_rows((id(contract), *inputs), time.time_ns() // 1000, columns, self._log_types(contract))
        except Exception:  # logging must never fail a response
            log.exception("prediction log append failed for request %s", request_id)

    def _log_types(self, contract: ModelContract) -> dict[str, pa.DataType]:
        """The prediction log's Arrow types that differ from its default (numbers as float64):
        integer join keys and the label row ids, int64 in every file, also where a request holds
        only nulls. Per contract: a shadow challenger's rows have the challenger's."""
        cached = self._types.get(id(contract))
        if cached is not None and cached[0] is contract:
            return cached[1]
        ids = [k for k, kind in zip(contract.join_keys, contract.key_kinds, strict=True) if kind == "int"]
        labels = contract.label.join_keys if contract.label else ()
        passthrough = [p for p in labels if p not in contract.join_keys and p not in contract.request_columns]
        types = dict.fromkeys((*ids, *passthrough), pa.int64())
        if len(self._types) >= 8:  # contracts of versions no longer served
            self._types.clear()
        self._types[id(contract)] = (contract, types)
        return types


Columns = Mapping[str, np.ndarray]  # equal-length numpy columns, one row per payment


def _columns(rows: Columns | pd.DataFrame) -> dict[str, np.ndarray]:
    if isinstance(rows, pd.DataFrame):
        return {str(c): rows[c].to_numpy() for c in rows.columns}
    return dict(rows)


def _checked_predict(model: LoadedModel, inputs: Columns, n: int, timeout_s: float) -> np.ndarray:
    """``model``'s predictions for the ``n`` rows of ``inputs`` as float64 of the task's shape, all
    finite; ValueError otherwise."""
    contract = model.contract
    expected = (n, contract.width) if contract.task == "multiclass" else (n,)
    scores = np.asarray(model.predict(inputs, timeout_s=timeout_s), dtype=np.float64)
    if scores.shape != expected or not np.isfinite(scores).all():
        raise ValueError(f"predictions of shape {scores.shape} with non-finite values; expected {expected}")
    return scores


def _latency_clock(model: LoadedModel) -> Callable[[], float]:
    """How a call of ``model`` is timed for the canary: its thread's CPU time when called directly
    (a CPU node), wall time from submit when batched (GPU: the queue is part of its latency)."""
    return time.thread_time if model.batcher is None else time.perf_counter


def _length(columns: Columns) -> int:
    return len(next(iter(columns.values()))) if columns else 0


def _take(columns: Columns, rows: np.ndarray) -> Columns:
    """The ``rows`` (a bool mask) of every column; no copy when every row is taken."""
    if rows.all():
        return columns
    return {name: values[rows] for name, values in columns.items()}
