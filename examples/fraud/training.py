"""Train the fraud model from a point-in-time training frame, split by time.

    labels known by the cutoff ──► entity rows (payments, prediction time = authorisation)
        │  FeatureClient.training_frame (point in time)
        ▼
    frame, oldest ─────────────────────────────────────────────────────────────► newest
           │ fit (gradient steps)      │ tune (early stop) │ gap │ validation (metrics only) │
         start                                        fit_end  train_end                   end

Delayed labels: a legitimate payment is only known to be legitimate once its chargeback window
has closed (30 days), while fraud is reported within days. Payments younger than
``label_maturity`` at the cutoff would be labelled mostly when they are fraud, so the data window
ends ``label_maturity`` before the cutoff, and training refuses a window where less than
``min_label_coverage`` of the payments have a label (the maturity is shorter than the delay).

The data starts ``feature_warmup`` after the first raw event: before that, 30-day aggregates are
computed over less than 30 days and don't look like anything serving will see. The ``gap``
(``validation_gap``) between the last training row and the first validation row stands for the
time a deployed model waits for its training labels to mature; its rows are used for nothing.

:func:`prepare` reads and checks the data (every data error is raised before anything is logged
or registered); :func:`fit` trains and evaluates. Neither knows about MLflow.
"""

from __future__ import annotations

import copy
import logging
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from functools import cached_property
from typing import TYPE_CHECKING, Any

import numpy as np
import pandas as pd

from examples.fraud.feature_views import DEFAULT_FEATURES
from examples.fraud.model import FraudModel, ModelSpec, build_module
from pipelines.errors import EmptyFrameError, ImmatureLabelsError, NoLabelsError, SingleClassError, TrainingError
from pipelines.model_metrics import score_metrics
from pipelines.training_data import frame_sha256, utc_timestamp

if TYPE_CHECKING:
    import torch

    from features.sdk import FeatureClient
    from monitoring.profile import ReferenceProfile

__all__ = ["DataWindow", "TrainConfig", "TrainResult", "TrainingData", "fit", "prepare"]

log = logging.getLogger(__name__)

LABEL = "is_fraud"
SCORE = "score"
KEYS = ("transaction_id", "customer_id", "merchant_id", "event_timestamp")


@dataclass(frozen=True)
class TrainConfig:
    """What to train on and how. Times are UTC; durations are ``timedelta``."""

    label_cutoff: datetime | None = None   # labels known by then; default: the newest payment's time
    label_maturity: timedelta = timedelta(days=30)  # payments younger than this at the cutoff are left out
    window: timedelta | None = None        # sliding training window ending at cutoff - maturity; None: all
    feature_warmup: timedelta = timedelta(days=30)  # history the longest feature window needs
    min_label_coverage: float = 0.99       # labelled share of payments the window must reach
    validation_share: float = 0.2          # newest share of the window's time span, for metrics only
    validation_gap: timedelta = timedelta(days=7)  # unused rows between training and validation
    tune_share: float = 0.1                # newest share of the training rows' span, for early stopping
    features: tuple[str, ...] = DEFAULT_FEATURES
    request_numeric: tuple[str, ...] = ("amount",)        # known at prediction time, not from the store
    request_categorical: tuple[str, ...] = ("channel",)
    hidden: tuple[int, ...] = (256, 128)
    dropout: float = 0.1
    unknown_rate: float = 0.02             # share of category codes trained as "unknown" (row 0)
    epochs: int = 20
    patience: int = 3                      # epochs without a better tune loss before stopping
    batch_size: int = 2048
    learning_rate: float = 2e-3
    weight_decay: float = 1e-5
    seed: int = 0
    max_rows: int | None = None            # keep a uniform sample of at most this many labelled rows
    device: str = "auto"                   # "auto": CUDA when available, else CPU

    def __post_init__(self) -> None:
        for name in ("validation_share", "tune_share"):
            share = getattr(self, name)
            if not 0 < share < 1:
                raise TrainingError(f"{name}={share} must be between 0 and 1 (exclusive); e.g. 0.2")
        if self.epochs < 1 or self.patience < 1 or self.batch_size < 1:
            raise TrainingError("epochs, patience and batch_size must be positive integers")
        if self.window is not None and self.window <= timedelta(0):
            raise TrainingError(f"window={self.window} must be positive, e.g. timedelta(days=60), or None")
        for name in ("label_maturity", "feature_warmup", "validation_gap"):
            if getattr(self, name) < timedelta(0):
                raise TrainingError(f"{name}={getattr(self, name)} must not be negative")
        if not 0 <= self.min_label_coverage <= 1 or not 0 <= self.unknown_rate < 1:
            raise TrainingError("min_label_coverage must be in [0, 1] and unknown_rate in [0, 1)")

    def params(self) -> dict[str, Any]:
        """Flat parameters for a tracking system (durations in days)."""
        days = (lambda d: None if d is None else round(d / timedelta(days=1), 6))
        return {
            "label_maturity_days": days(self.label_maturity), "window_days": days(self.window),
            "feature_warmup_days": days(self.feature_warmup), "min_label_coverage": self.min_label_coverage,
            "validation_share": self.validation_share, "validation_gap_days": days(self.validation_gap),
            "tune_share": self.tune_share, "unknown_rate": self.unknown_rate,
            "hidden": ",".join(map(str, self.hidden)), "dropout": self.dropout, "epochs": self.epochs,
            "patience": self.patience, "batch_size": self.batch_size, "learning_rate": self.learning_rate,
            "weight_decay": self.weight_decay, "seed": self.seed, "max_rows": self.max_rows,
            "request_numeric": ",".join(self.request_numeric),
            "request_categorical": ",".join(self.request_categorical),
        }


@dataclass(frozen=True)
class DataWindow:
    """Prediction times (UTC) of the rows used: fit and tune in ``[start, fit_end)``, validation
    in ``[train_end, end]``; every label was known by ``label_cutoff``."""

    start: pd.Timestamp
    fit_end: pd.Timestamp
    train_end: pd.Timestamp
    end: pd.Timestamp
    label_cutoff: pd.Timestamp

    def params(self) -> dict[str, str]:
        """ISO 8601 strings, as logged."""
        return {"data_start": self.start.isoformat(), "fit_end": self.fit_end.isoformat(),
                "train_end": self.train_end.isoformat(),
                "data_end": self.end.isoformat(), "label_cutoff": self.label_cutoff.isoformat()}


@dataclass
class TrainingData:
    """A checked, time-split training frame and where it came from."""

    frame: pd.DataFrame                 # KEYS, request columns, features, LABEL; oldest first
    window: DataWindow
    split: np.ndarray                   # per row: 0 fit, 1 tune, 2 validation, 3 gap (unused)
    feature_columns: list[str]          # model inputs (request columns, then store features)
    categorical: list[str]
    lineage: dict[str, Any]
    label_coverage: dict[str, float]    # labelled share of the payments: "training", "validation"
    seconds: dict[str, float] = field(default_factory=dict)

    @cached_property
    def fingerprint(self) -> str:
        """SHA-256 of the frame's columns, dtypes and values, in row order."""
        return frame_sha256(self.frame)

    def rows(self) -> dict[str, int]:
        """Row and fraud counts per split."""
        y = self.frame[LABEL].to_numpy()
        out: dict[str, int] = {}
        for code, name in enumerate(("fit", "tune", "validation")):
            mask = self.split == code
            out[f"rows_{name}"], out[f"fraud_{name}"] = int(mask.sum()), int(y[mask].sum())
        return out


@dataclass
class TrainResult:
    """A trained model with its validation metrics, learning curve and reference profile."""

    model: FraudModel
    metrics: dict[str, float]              # on the validation split
    history: list[dict[str, float]]        # per epoch: fit_loss, tune_loss
    best_epoch: int
    profile: ReferenceProfile              # model inputs and SCORE over the validation rows
    scores: np.ndarray                     # per frame row
    device: str
    seconds: dict[str, float]


def prepare(client: FeatureClient, config: TrainConfig) -> TrainingData:
    """Label set, point-in-time frame and time split for ``config``; raises a :class:`TrainingError`
    (or the feature store's ``UnknownFeatureError``) before anything is trained."""
    from examples.fraud.training_data import first_event_time, labelled_transactions, last_event_time

    raw = client.settings.raw_dir
    lineage = client.lineage(config.features)  # raises UnknownFeatureError before any data is read
    _device(config.device)
    started = time.perf_counter()
    cutoff = utc_timestamp(config.label_cutoff or last_event_time(raw))
    end = cutoff - config.label_maturity
    earliest = first_event_time(raw) + config.feature_warmup
    start = max(end - config.window, earliest) if config.window is not None else earliest
    if start >= end:
        raise NoLabelsError(
            f"no payments to train on: features need {config.feature_warmup.days} days of history (until "
            f"{earliest:%Y-%m-%d %H:%M}) and labels {config.label_maturity.days} days to mature (until "
            f"{end:%Y-%m-%d %H:%M} for a cutoff of {cutoff:%Y-%m-%d %H:%M}); move the cutoff later or "
            "generate more days of data")
    entities = labelled_transactions(raw, label_cutoff=cutoff.to_pydatetime(), events_from=start.to_pydatetime(),
                                     events_until=end.to_pydatetime())
    _check_labels(entities, start, end, cutoff, config)
    window = _window(start, end, cutoff, config)
    coverage = _label_coverage(raw, entities, window, config)
    if config.max_rows is not None and len(entities) > config.max_rows:
        keep = np.random.default_rng(config.seed).choice(len(entities), size=config.max_rows, replace=False)
        entities = entities.iloc[np.sort(keep)].reset_index(drop=True)
    labels_s = time.perf_counter() - started
    features = list(config.features)
    frame = client.training_frame(entities, features)
    assert isinstance(frame, pd.DataFrame)
    frame = frame.sort_values(["event_timestamp", "transaction_id"], kind="stable").reset_index(drop=True)
    frame_s = time.perf_counter() - started - labels_s
    store_columns = [ref.split(":", 1)[1] for ref in features]
    columns = [*config.request_numeric, *config.request_categorical, *store_columns]
    categorical = [*config.request_categorical,
                   *[c for c in store_columns if not pd.api.types.is_numeric_dtype(frame[c])]]
    data = TrainingData(frame[[*KEYS, *columns, LABEL]], window, _split(frame, window, config.tune_share),
                        columns, categorical, lineage, coverage, {"labels": labels_s, "frame": frame_s})
    _check_splits(data)
    return data



def _check_labels(entities: pd.DataFrame, start: pd.Timestamp, end: pd.Timestamp, cutoff: pd.Timestamp,
                  config: TrainConfig) -> None:
    span = f"payments from {start:%Y-%m-%d %H:%M} to {end:%Y-%m-%d %H:%M} UTC"
    if entities.empty:
        raise NoLabelsError(
            f"none of the {span} has a fraud label known by {cutoff:%Y-%m-%d %H:%M}; labels arrive up to "
            f"{config.label_maturity.days} days late, so move the cutoff later, widen the window, or generate "
            "more days of data")
    fraud = int(entities[LABEL].sum())
    if fraud in (0, len(entities)):
        why = ("legitimate payments are only labelled once their 30-day chargeback window closes: raise the "
               "label maturity" if fraud else "widen the window, or check the label feed")
        raise SingleClassError(f"the {len(entities):,} labels known by {cutoff:%Y-%m-%d %H:%M} for {span} are "
                               f"{'all' if fraud else 'none of them'} fraud; {why}")


def _label_coverage(raw: Any, entities: pd.DataFrame, window: DataWindow, config: TrainConfig) -> dict[str, float]:
    """Labelled share of the payments in the training rows and in the validation rows; raises
    :class:`ImmatureLabelsError` below ``min_label_coverage`` (labels would be biased to fraud)."""
    from examples.fraud.training_data import count_transactions

    when = entities["event_timestamp"]
    parts = {"training": (window.start, window.fit_end - pd.Timedelta(microseconds=1), when < window.fit_end),
             "validation": (window.train_end, window.end, when >= window.train_end)}
    coverage = {}
    for name, (first, last, mask) in parts.items():
        total = count_transactions(raw, events_from=first.to_pydatetime(), events_until=last.to_pydatetime())
        coverage[name] = float(mask.sum()) / total if total else 1.0
        if coverage[name] < config.min_label_coverage:
            raise ImmatureLabelsError(
                f"only {coverage[name]:.1%} of the {total:,} payments in the {name} rows ({first:%Y-%m-%d} to "
                f"{last:%Y-%m-%d}) have a label known by {window.label_cutoff:%Y-%m-%d %H:%M}; the missing ones are "
                f"mostly legitimate, so the labels are biased to fraud. Raise the label maturity (now "
                f"{config.label_maturity.days} days) to the longest label delay, 30 days for chargebacks")
    return coverage


def _window(start: pd.Timestamp, end: pd.Timestamp, cutoff: pd.Timestamp, config: TrainConfig) -> DataWindow:
    train_end = (start + (end - start) * (1 - config.validation_share)).floor("s")
    fit_end = max(start, train_end - config.validation_gap)
    return DataWindow(start, fit_end, train_end, end, cutoff)


def _split(frame: pd.DataFrame, window: DataWindow, tune_share: float) -> np.ndarray:
    when = frame["event_timestamp"]
    tune_start = window.start + (window.fit_end - window.start) * (1 - tune_share)
    split = np.zeros(len(frame), dtype=np.int8)
    split[(when >= tune_start).to_numpy()] = 1
    split[(when >= window.fit_end).to_numpy()] = 3
    split[(when >= window.train_end).to_numpy()] = 2
    return split


def _check_splits(data: TrainingData) -> None:
    counts = data.rows()
    for name in ("fit", "tune", "validation"):
        rows, fraud = counts[f"rows_{name}"], counts[f"fraud_{name}"]
        if rows == 0:
            raise EmptyFrameError(
                f"the {name} split ({_bounds(data.window, name)}) has no labelled payments; "
                "widen the window or generate more days of data")
        if fraud in (0, rows):
            raise SingleClassError(
                f"the {name} split ({_bounds(data.window, name)}) has {rows:,} payments, "
                f"{'all' if fraud else 'none of them'} fraud; a model can't be fitted or measured on one "
                "class: widen the window, or check the labels")


def _bounds(window: DataWindow, name: str) -> str:
    return (f"{window.train_end:%Y-%m-%d %H:%M} to {window.end:%Y-%m-%d %H:%M}" if name == "validation"
            else f"{window.start:%Y-%m-%d %H:%M} to {window.fit_end:%Y-%m-%d %H:%M}")


def fit(data: TrainingData, config: TrainConfig, *,
        on_epoch: Callable[[int, dict[str, float]], None] | None = None, progress: bool = True) -> TrainResult:
    """Train on the fit split with early stopping on the tune split; measure on validation.

    Deterministic for a seed on CPU (same data, same thread count). ``on_epoch(epoch, losses)``
    is called after every epoch (the MLflow logger uses it to draw the learning curve live).
    """
    import torch

    from monitoring.profile import ReferenceProfile

    started = time.perf_counter()
    device = torch.device(_device(config.device))
    split = data.split
    numeric_cols = [c for c in data.feature_columns if c not in data.categorical]
    spec = ModelSpec.fit(data.frame[split == 0], numeric_cols, data.categorical,
                         hidden=config.hidden, dropout=config.dropout)
    history: list[dict[str, float]] = []
    model = FraudModel(spec, _train(spec, data, config, device, on_epoch, progress, history))
    fit_s = time.perf_counter() - started
    scores = model.predict_proba(data.frame)
    y = data.frame[LABEL].to_numpy()
    metrics = score_metrics(y[split == 2], scores[split == 2])
    # The reference is what production should look like: out-of-sample scores on the newest rows.
    profiled = data.frame.loc[split == 2, data.feature_columns].assign(**{SCORE: scores[split == 2]})
    profile = ReferenceProfile.fit(profiled, categorical=data.categorical)
    best = min(range(len(history)), key=lambda i: history[i]["tune_loss"])
    return TrainResult(model.to("cpu"), metrics, history, best + 1, profile, scores, str(device),
                       {**data.seconds, "fit": fit_s, "evaluate": time.perf_counter() - started - fit_s})


def _device(wanted: str) -> str:
    import torch

    if wanted == "auto":
        return "cuda" if torch.cuda.is_available() else "cpu"
    if wanted.startswith("cuda") and not torch.cuda.is_available():
        raise TrainingError(f"device {wanted!r} asked for, but PyTorch sees no CUDA device; use 'auto' or 'cpu'")
    return wanted


def _train(spec: ModelSpec, data: TrainingData, config: TrainConfig, device: torch.device,
           on_epoch: Callable[[int, dict[str, float]], None] | None, progress: bool,
           history: list[dict[str, float]]) -> torch.nn.Module:
    import torch

    # The CPU kernels used here are deterministic as they are (tests check identical weights);
    # turning the switch on would import torch's compiler stack (~4 s) for nothing. On CUDA,
    # embedding backward uses atomics: ask for the deterministic kernels and warn where none exist.
    deterministic = torch.are_deterministic_algorithms_enabled()
    if device.type == "cuda":
        torch.use_deterministic_algorithms(True, warn_only=True)
    try:
        torch.manual_seed(config.seed)
        module = build_module(spec).to(device)
        fit_x, tune_x = (_tensors(spec, data, code, device) for code in (0, 1))
        optimizer = torch.optim.AdamW(module.parameters(), lr=config.learning_rate,
                                      weight_decay=config.weight_decay)
        shuffle = torch.Generator().manual_seed(config.seed)
        best: tuple[float, dict[str, torch.Tensor]] | None = None
        with _epochs(config.epochs, progress) as advance:
            for epoch in range(1, config.epochs + 1):
                fit_loss = _epoch(module, optimizer, fit_x, config.batch_size, shuffle, config.unknown_rate)
                tune_loss = _loss(module, tune_x)
                history.append({"fit_loss": fit_loss, "tune_loss": tune_loss})
                if on_epoch is not None:
                    on_epoch(epoch, history[-1])
                advance(epoch, tune_loss)
                if best is None or tune_loss < best[0]:
                    best = (tune_loss, copy.deepcopy(module.state_dict()))
                elif epoch - _best_epoch(history) >= config.patience:
                    log.info("early stop after epoch %d (best %d)", epoch, _best_epoch(history))
                    break
        assert best is not None
        module.load_state_dict(best[1])
        return module.eval()
    finally:
        torch.use_deterministic_algorithms(deterministic)


def _best_epoch(history: Sequence[dict[str, float]]) -> int:
    return 1 + min(range(len(history)), key=lambda i: history[i]["tune_loss"])


def _tensors(spec: ModelSpec, data: TrainingData, code: int, device: torch.device) -> tuple[torch.Tensor, ...]:
    import torch

    rows = data.frame[data.split == code]
    numeric, codes = spec.encode(rows)
    y = rows[LABEL].to_numpy(dtype=np.float32)
    return tuple(torch.from_numpy(a).to(device) for a in (numeric, codes, y))


def _epoch(module: torch.nn.Module, optimizer: torch.optim.Optimizer, tensors: tuple[torch.Tensor, ...],
           batch_size: int, shuffle: torch.Generator, unknown_rate: float) -> float:
    import torch

    numeric, codes, y = tensors
    module.train()
    order = torch.randperm(len(y), generator=shuffle)
    # Category dropout: some codes become 0 ("unknown"), so the embedding row for categories first
    # met in production is trained, not left at its random start.
    unknown = torch.rand((len(y), codes.shape[1]), generator=shuffle) < unknown_rate
    order, unknown = order.to(y.device), unknown.to(y.device)
    total = torch.zeros((), device=y.device)
    for s in range(0, len(y), batch_size):
        rows = order[s:s + batch_size]
        batch_codes = codes[rows].masked_fill(unknown[s:s + batch_size], 0)
        loss = torch.nn.functional.binary_cross_entropy_with_logits(module(numeric[rows], batch_codes), y[rows])
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        optimizer.step()
        total += loss.detach() * len(rows)
    return float(total) / len(y)


def _loss(module: torch.nn.Module, tensors: tuple[torch.Tensor, ...], batch_size: int = 65_536) -> float:
    import torch

    numeric, codes, y = tensors
    module.eval()
    total = 0.0
    with torch.inference_mode():
        for s in range(0, len(y), batch_size):
            logits = module(numeric[s:s + batch_size], codes[s:s + batch_size])
            total += float(torch.nn.functional.binary_cross_entropy_with_logits(
                logits, y[s:s + batch_size], reduction="sum"))
    return total / len(y)


class _epochs:
    """A rich progress bar over epochs (or nothing), as a context manager yielding ``advance``."""

    def __init__(self, total: int, enabled: bool) -> None:
        self.total, self.enabled = total, enabled
        self.bars: Any = None

    def __enter__(self) -> Callable[[int, float], None]:
        if not self.enabled:
            return lambda epoch, loss: None
        from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn

        self.bars = Progress(TextColumn("training {task.fields[loss]}"), BarColumn(), MofNCompleteColumn(),
                             TextColumn("epochs"), TimeElapsedColumn())
        self.bars.start()
        task = self.bars.add_task("train", total=self.total, loss="")

        def advance(epoch: int, loss: float) -> None:
            assert self.bars is not None
            self.bars.update(task, completed=epoch, loss=f"(tune loss {loss:.4f})")

        return advance

    def __exit__(self, *exc: object) -> None:
        if self.bars is not None:
            self.bars.stop()

