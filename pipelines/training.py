"""Train the fraud model from a point-in-time training frame, split by time.

    labels known by the cutoff ──► entity rows (payments, prediction time = authorisation)
        │  FeatureClient.training_frame (point in time)
        ▼
    frame, oldest ──────────────────────────────────────────────► newest
           │ fit (gradient steps)         │ tune (early stop) │ validation (metrics only) │
         start                                          train_end                      end

Delayed labels: a legitimate payment is only known to be legitimate once its chargeback window
has closed (30 days), while fraud is reported within days. Payments younger than
``label_maturity`` at the cutoff would be labelled mostly when they are fraud, so the data window
ends ``label_maturity`` before the cutoff; the share of payments in the window whose label was
known is reported as ``label_coverage``.

:func:`prepare` reads and checks the data (every data error is raised before anything is logged
or registered); :func:`fit` trains and evaluates. Neither knows about MLflow.
"""

from __future__ import annotations

import copy
import hashlib
import logging
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from typing import TYPE_CHECKING, Any

import numpy as np
import pandas as pd

from features.feature_views import DEFAULT_FEATURES
from pipelines.errors import EmptyFrameError, NoLabelsError, SingleClassError, TrainingError
from pipelines.model_metrics import score_metrics
from serving.fraud_model import FraudModel, ModelSpec, build_module

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
    validation_share: float = 0.2          # newest share of the window's time span, for metrics only
    tune_share: float = 0.1                # newest share of the rest, for early stopping
    features: tuple[str, ...] = DEFAULT_FEATURES
    request_numeric: tuple[str, ...] = ("amount",)        # known at prediction time, not from the store
    request_categorical: tuple[str, ...] = ("channel",)
    hidden: tuple[int, ...] = (256, 128)
    dropout: float = 0.1
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
        if self.label_maturity < timedelta(0):
            raise TrainingError(f"label_maturity={self.label_maturity} must not be negative")

    def params(self) -> dict[str, Any]:
        """Flat parameters for a tracking system (durations in days)."""
        days = (lambda d: None if d is None else round(d / timedelta(days=1), 6))
        return {
            "label_maturity_days": days(self.label_maturity), "window_days": days(self.window),
            "validation_share": self.validation_share, "tune_share": self.tune_share,
            "hidden": ",".join(map(str, self.hidden)), "dropout": self.dropout, "epochs": self.epochs,
            "patience": self.patience, "batch_size": self.batch_size, "learning_rate": self.learning_rate,
            "weight_decay": self.weight_decay, "seed": self.seed, "max_rows": self.max_rows,
            "request_numeric": ",".join(self.request_numeric),
            "request_categorical": ",".join(self.request_categorical),
        }


@dataclass(frozen=True)
class DataWindow:
    """Prediction times (UTC) of the rows used: fit and tune in ``[start, train_end)``, validation
    in ``[train_end, end]``; every label was known by ``label_cutoff``."""

    start: pd.Timestamp
    train_end: pd.Timestamp
    end: pd.Timestamp
    label_cutoff: pd.Timestamp

    def params(self) -> dict[str, str]:
        """ISO 8601 strings, as logged."""
        return {"data_start": self.start.isoformat(), "train_end": self.train_end.isoformat(),
                "data_end": self.end.isoformat(), "label_cutoff": self.label_cutoff.isoformat()}


@dataclass
class TrainingData:
    """A checked, time-split training frame and where it came from."""

    frame: pd.DataFrame                 # KEYS, request columns, features, LABEL; oldest first
    window: DataWindow
    split: np.ndarray                   # per row: 0 fit, 1 tune, 2 validation
    feature_columns: list[str]          # model inputs (request columns, then store features)
    categorical: list[str]
    lineage: dict[str, Any]
    label_coverage: float               # labelled share of the payments in the window
    seconds: dict[str, float] = field(default_factory=dict)

    @property
    def fingerprint(self) -> str:
        """SHA-256 of the frame's columns, dtypes and values, in row order."""
        digest = hashlib.sha256(repr([(c, str(t)) for c, t in self.frame.dtypes.items()]).encode())
        digest.update(pd.util.hash_pandas_object(self.frame, index=False).to_numpy().tobytes())
        return digest.hexdigest()

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
    profile: ReferenceProfile              # model inputs and SCORE over every row of the frame
    scores: np.ndarray                     # per frame row
    device: str
    seconds: dict[str, float]


def prepare(client: FeatureClient, config: TrainConfig) -> TrainingData:
    """Label set, point-in-time frame and time split for ``config``; raises a :class:`TrainingError`
    (or the feature store's ``UnknownFeatureError``) before anything is trained."""
    from pipelines.training_data import count_transactions, labelled_transactions, last_event_time

    raw = client.settings.raw_dir
    lineage = client.lineage(config.features)  # raises UnknownFeatureError before any data is read
    started = time.perf_counter()
    cutoff = pd.Timestamp(config.label_cutoff or last_event_time(raw))
    cutoff = cutoff.tz_localize("UTC") if cutoff.tzinfo is None else cutoff.tz_convert("UTC")
    end = cutoff - config.label_maturity
    start = end - config.window if config.window is not None else None
    entities = labelled_transactions(raw, label_cutoff=cutoff.to_pydatetime(), events_from=start,
                                     events_until=end.to_pydatetime())
    if entities.empty:
        raise NoLabelsError(
            f"no payment authorised between {start or 'the first day'} and {end} has a fraud label known by "
            f"{cutoff}; labels arrive up to {config.label_maturity.days} days late, so move the cutoff later, "
            "widen the window, or generate more days of data")
    coverage = len(entities) / max(count_transactions(raw, events_from=start, events_until=end.to_pydatetime()), 1)
    if config.max_rows is not None and len(entities) > config.max_rows:
        keep = np.random.default_rng(config.seed).choice(len(entities), size=config.max_rows, replace=False)
        entities = entities.iloc[np.sort(keep)].reset_index(drop=True)
    labels_s = time.perf_counter() - started
    features = list(config.features)
    frame = client.training_frame(entities, features)
    assert isinstance(frame, pd.DataFrame)
    frame = frame.sort_values(["event_timestamp", "transaction_id"], kind="stable").reset_index(drop=True)
    frame_s = time.perf_counter() - started - labels_s
    first = frame["event_timestamp"].min() if start is None else start
    window = _window(pd.Timestamp(first), end, cutoff, config.validation_share)
    split = _split(frame, window, config.tune_share)
    store_columns = [ref.split(":", 1)[1] for ref in features]
    columns = [*config.request_numeric, *config.request_categorical, *store_columns]
    categorical = [*config.request_categorical,
                   *[c for c in store_columns if not pd.api.types.is_numeric_dtype(frame[c])]]
    data = TrainingData(frame[[*KEYS, *columns, LABEL]], window, split, columns, categorical,
                        lineage, coverage, {"labels": labels_s, "frame": frame_s})
    _check_splits(data)
    return data


def _window(start: pd.Timestamp, end: pd.Timestamp, cutoff: pd.Timestamp, share: float) -> DataWindow:
    start = start.tz_localize("UTC") if start.tzinfo is None else start.tz_convert("UTC")
    return DataWindow(start, (start + (end - start) * (1 - share)).floor("s"), end, cutoff)


def _split(frame: pd.DataFrame, window: DataWindow, tune_share: float) -> np.ndarray:
    when = frame["event_timestamp"]
    tune_start = window.start + (window.train_end - window.start) * (1 - tune_share)
    split = np.zeros(len(frame), dtype=np.int8)
    split[(when >= tune_start).to_numpy()] = 1
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
            else f"{window.start:%Y-%m-%d %H:%M} to {window.train_end:%Y-%m-%d %H:%M}")


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
    profiled = data.frame[data.feature_columns].assign(**{SCORE: scores})
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
                fit_loss = _epoch(module, optimizer, fit_x, config.batch_size, shuffle)
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
           batch_size: int, shuffle: torch.Generator) -> float:
    import torch

    numeric, codes, y = tensors
    module.train()
    order = torch.randperm(len(y), generator=shuffle).to(y.device)
    total = torch.zeros((), device=y.device)
    for s in range(0, len(y), batch_size):
        rows = order[s:s + batch_size]
        loss = torch.nn.functional.binary_cross_entropy_with_logits(module(numeric[rows], codes[rows]), y[rows])
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

