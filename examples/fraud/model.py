"""The fraud model: a PyTorch MLP for tabular data that carries its own preprocessing.

    raw columns (pandas)  ──encode()──►  numeric float32 [n, k] (NaN = missing)
                                         codes   int64   [n, c] (0 = unknown or missing)
                          ──TabularMLP──► logit [n]  ──sigmoid──► P(fraud)

Everything that turns raw feature values into model inputs is fitted on the training rows and
stored with the weights: per numeric column an optional ``log1p`` (for skewed non-negative
columns such as amounts in EUR), the mean and standard deviation used for scaling, and a
missing-value indicator; per categorical column its vocabulary (an embedding row per category,
row 0 for anything unseen). The string-to-code lookup runs in numpy (strings can't go to a GPU);
scaling, imputation and embeddings run inside the module, on whatever device it lives on. So
serving feeds raw online features and cannot skew from training.

:class:`FraudModel` is the MLflow ``pyfunc`` wrapper: ``predict(frame)`` returns the fraud
probability per row; serving unwraps it to batch on a GPU with :meth:`FraudModel.encode` and
:attr:`FraudModel.module`.
"""

from __future__ import annotations

import functools
import hashlib
import json
import math
import pickle
from collections.abc import Mapping
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import TYPE_CHECKING, cast

import numpy as np
import pandas as pd

from features.category_text import as_text, category_text
from serving.errors import ModelFormatError, ModelInputError

if TYPE_CHECKING:
    import torch

__all__ = ["CategoricalInput", "FraudModel", "ModelSpec", "NumericInput", "build_module"]

SPEC_FORMAT = 2  # 2: weights.pt records its spec's SHA-256; "3.0" and "3" are one category
_SKEW_FOR_LOG = 2.0  # a non-negative column more skewed than this is scaled on log1p
_CLIP = 8.0          # standardized values are clipped to ±8 so one outlier can't dominate


@dataclass(frozen=True)
class NumericInput:
    """A numeric column: ``(log1p(max(x, 0)) if log else x - mean) / std``, clipped; NaN -> 0."""

    name: str
    log: bool
    mean: float
    std: float


@dataclass(frozen=True)
class CategoricalInput:
    """A text column, embedded; ``vocabulary[i]`` has code ``i + 1`` (0: unseen or missing)."""

    name: str
    vocabulary: tuple[str, ...]
    dim: int


@dataclass(frozen=True)
class ModelSpec:
    """Inputs, their fitted preprocessing, and the network's shape."""

    numeric: tuple[NumericInput, ...]
    categorical: tuple[CategoricalInput, ...]
    hidden: tuple[int, ...] = (256, 128)
    dropout: float = 0.1

    @property
    def columns(self) -> list[str]:
        """The raw input columns, numeric first."""
        return [c.name for c in self.numeric] + [c.name for c in self.categorical]

    @classmethod
    def fit(cls, frame: pd.DataFrame, numeric: list[str], categorical: list[str], *,
            hidden: tuple[int, ...] = (256, 128), dropout: float = 0.1, min_count: int = 20) -> ModelSpec:
        """Fit the preprocessing on ``frame`` (the training rows only).

        A category seen fewer than ``min_count`` times shares the unknown row, so the model
        learns what to do with categories it will meet for the first time in production.
        """
        missing = [c for c in [*numeric, *categorical] if c not in frame.columns]
        if missing:
            raise ModelInputError(f"columns {missing} are not in the training frame; "
                                  f"it has {list(frame.columns)}")
        return cls(
            numeric=tuple(_fit_numeric(name, frame[name]) for name in numeric),
            categorical=tuple(_fit_categorical(name, frame[name], min_count) for name in categorical),
            hidden=tuple(int(h) for h in hidden),
            dropout=float(dropout),
        )

    def to_json(self) -> str:
        """The spec as JSON (stored next to the weights)."""
        return json.dumps({"format": SPEC_FORMAT, **asdict(self)}, indent=1)

    @classmethod
    def from_json(cls, text: str) -> ModelSpec:
        """Read a spec written by :meth:`to_json`."""
        raw = json.loads(text)
        if raw.get("format") != SPEC_FORMAT:
            raise ModelFormatError(f"model spec format {raw.get('format')!r} is not {SPEC_FORMAT}; "
                                   "load it with the tidemark version that trained it, or retrain")
        return cls(
            numeric=tuple(NumericInput(**c) for c in raw["numeric"]),
            categorical=tuple(CategoricalInput(c["name"], tuple(c["vocabulary"]), c["dim"])
                              for c in raw["categorical"]),
            hidden=tuple(raw["hidden"]),
            dropout=raw["dropout"],
        )

    def encode(self, frame: pd.DataFrame | Mapping[str, np.ndarray]) -> tuple[np.ndarray, np.ndarray]:
        """Raw columns -> (numeric float32 [n, k] with NaN for missing, codes int64 [n, c]).

        ``frame`` is a DataFrame or a mapping of equal-length numpy columns (the serving path:
        numbers as floats with NaN for missing, text as objects with None). Extra columns are
        ignored; a missing column raises :class:`ModelInputError`.
        """
        have = frame.columns if isinstance(frame, pd.DataFrame) else frame
        absent = [c for c in self.columns if c not in have]
        if absent:
            raise ModelInputError(f"input lacks columns {absent}; the model needs {self.columns}")
        n = len(frame) if isinstance(frame, pd.DataFrame) else len(frame[self.columns[0]]) if self.columns else 0
        numeric = np.empty((n, len(self.numeric)), dtype=np.float32)
        with np.errstate(over="ignore"):  # beyond float32's range is ±inf, which the module clips to ±_CLIP
            for j, col in enumerate(self.numeric):
                numeric[:, j] = _as_float(frame[col.name], col.name)
        codes = np.empty((n, len(self.categorical)), dtype=np.int64)
        for j, cat in enumerate(self.categorical):
            values = frame[cat.name]
            if n <= _SMALL:  # a request: a dict lookup per value beats building a Categorical
                lookup = _lookup(cat.vocabulary)
                codes[:, j] = [0 if _missing(v) else lookup.get(v if isinstance(v, str) else as_text(v), 0)
                               for v in values.tolist()]
            else:
                series = values if isinstance(values, pd.Series) else pd.Series(values, dtype=object)
                codes[:, j] = pd.Categorical(_as_text(series), categories=list(cat.vocabulary)).codes + 1
        return numeric, codes


def _sha256(text: str) -> str:
    return hashlib.sha256(text.encode()).hexdigest()


def _fit_numeric(name: str, series: pd.Series) -> NumericInput:
    values = _as_float(series, name)
    values = values[np.isfinite(values)]
    if values.size == 0:
        return NumericInput(name, log=False, mean=0.0, std=1.0)
    skew = float(pd.Series(values).skew()) if values.size > 2 else 0.0
    log = bool(values.min() >= 0 and math.isfinite(skew) and skew > _SKEW_FOR_LOG)
    scaled = np.log1p(values) if log else values
    std = float(scaled.std())
    return NumericInput(name, log=log, mean=float(scaled.mean()), std=std if std > 1e-12 else 1.0)


def _fit_categorical(name: str, series: pd.Series, min_count: int) -> CategoricalInput:
    counts = _as_text(series).value_counts()
    vocabulary = tuple(sorted(str(v) for v, n in counts.items() if n >= min_count))
    dim = int(min(16, max(2, round(1.6 * (len(vocabulary) + 1) ** 0.56))))  # fastai's rule of thumb
    return CategoricalInput(name, vocabulary, dim)


_SMALL = 256  # rows up to which categories are looked up value by value


@functools.lru_cache(maxsize=256)
def _lookup(vocabulary: tuple[str, ...]) -> dict[str, int]:
    return {text: i + 1 for i, text in enumerate(vocabulary)}


def _missing(value: object) -> bool:
    return value is None or value is pd.NA or value is pd.NaT or (isinstance(value, float) and math.isnan(value))


def _as_float(values: pd.Series | np.ndarray, name: str) -> np.ndarray:
    if isinstance(values, np.ndarray):
        if values.dtype.kind in "fiub":  # the serving path's columns: already numbers
            return values
        values = pd.Series(values, name=name)
    if pd.api.types.is_numeric_dtype(values.dtype):  # ints, floats, nullable or not: one conversion
        return values.to_numpy(dtype=np.float64, na_value=np.nan)
    try:
        return pd.to_numeric(values, errors="raise").astype("float64").to_numpy(dtype=np.float64,
                                                                                na_value=np.nan)
    except (TypeError, ValueError) as exc:
        raise ModelInputError(f"column {name!r} must be numeric ({exc})") from None


def _as_text(series: pd.Series) -> pd.Series:
    # Codes, strings and whole floats are one category ("3" == 3 == 3.0), as in the drift profiles.
    return category_text(series)


def build_module(spec: ModelSpec) -> torch.nn.Module:
    """The network for ``spec`` with its preprocessing as buffers (weights freshly initialised)."""
    import torch
    import torch.nn.functional as F
    from torch import nn

    class TabularMLP(nn.Module):
        log_mask: torch.Tensor
        mean: torch.Tensor
        std: torch.Tensor

        def __init__(self) -> None:
            super().__init__()
            k = len(spec.numeric)
            self.register_buffer("log_mask", torch.tensor([c.log for c in spec.numeric], dtype=torch.bool))
            self.register_buffer("mean", torch.tensor([c.mean for c in spec.numeric], dtype=torch.float32))
            self.register_buffer("std", torch.tensor([c.std for c in spec.numeric], dtype=torch.float32))
            self.embeddings = nn.ModuleList(nn.Embedding(len(c.vocabulary) + 1, c.dim) for c in spec.categorical)
            layers: list[nn.Module] = []
            width = 2 * k + sum(c.dim for c in spec.categorical)
            for h in spec.hidden:
                layers += [nn.Linear(width, h), nn.ReLU(), nn.Dropout(spec.dropout)]
                width = h
            layers.append(nn.Linear(width, 1))
            self.mlp = nn.Sequential(*layers)

        def forward(self, numeric: torch.Tensor, codes: torch.Tensor) -> torch.Tensor:
            # Few ops, since a one-row request pays torch's per-op and per-module overhead, not
            # arithmetic: the lookups call F.embedding on each table (the module call adds hooks'
            # bookkeeping) and missing values are masked in place (~15 % of a one-row forward).
            missing = torch.isnan(numeric)
            x = torch.where(self.log_mask, torch.log1p(numeric.clamp(min=0)), numeric)
            x = ((x - self.mean) / self.std).clamp(-_CLIP, _CLIP).masked_fill(missing, 0.0)
            tables = cast("list[nn.Embedding]", list(self.embeddings))
            parts = [x, missing.to(x.dtype)] + [F.embedding(column, emb.weight, emb.padding_idx)
                                                for column, emb in zip(codes.unbind(1), tables, strict=True)]
            return self.mlp(torch.cat(parts, dim=1)).squeeze(1)

    return TabularMLP()


class FraudModel:
    """The fitted model, as MLflow's ``pyfunc`` loads it (a ``PythonModel``; see :meth:`python_model`)."""

    def __init__(self, spec: ModelSpec, module: torch.nn.Module) -> None:
        self.spec = spec
        self.module = module.eval()
        self._device = next(module.parameters()).device  # kept: asking the module costs ~15 us a call

    @property
    def device(self) -> torch.device:
        """Where the module's weights live (move them with :meth:`to`)."""
        return self._device

    def to(self, device: str | torch.device) -> FraudModel:
        """Move the module to ``device`` (``"cuda"``, ``"cpu"``); returns self."""
        self.module.to(device)
        self._device = next(self.module.parameters()).device
        return self

    def encode(self, frame: pd.DataFrame | Mapping[str, np.ndarray]) -> tuple[np.ndarray, np.ndarray]:
        """Raw columns to the module's inputs; see :meth:`ModelSpec.encode`."""
        return self.spec.encode(frame)

    @property
    def accelerated(self) -> bool:
        """Whether the module runs on a GPU (serving's micro-batcher then waits for company)."""
        return bool(self.device.type == "cuda")

    def forward(self, numeric: np.ndarray, codes: np.ndarray) -> np.ndarray:
        """P(fraud) per row of encoded inputs (:meth:`encode`'s pair), float64, without gradients:
        with :meth:`encode` and :attr:`accelerated` this is serving's ``Predictor`` protocol."""
        import torch

        with torch.inference_mode():
            device = self.device
            logits = self.module(torch.from_numpy(numeric).to(device), torch.from_numpy(codes).to(device))
            # in float64: float32 sigmoid saturates at exactly 1.0 above a logit of ~17 (ties)
            return np.asarray(torch.sigmoid(logits.double()).cpu().numpy())

    def predict_proba(self, frame: pd.DataFrame | Mapping[str, np.ndarray], *, batch_size: int = 65_536) -> np.ndarray:
        """P(fraud) per row of ``frame`` (float64), scored in batches without gradients."""
        numeric, codes = self.encode(frame)
        out = np.empty(len(numeric), dtype=np.float64)
        for s in range(0, len(numeric), batch_size):
            out[s:s + batch_size] = self.forward(numeric[s:s + batch_size], codes[s:s + batch_size])
        return out

    def save(self, folder: Path) -> dict[str, str]:
        """Write ``spec.json`` and ``weights.pt`` under ``folder``; returns MLflow's artifacts map."""
        import torch

        folder.mkdir(parents=True, exist_ok=True)
        text = self.spec.to_json()
        (folder / "spec.json").write_text(text)
        state = {k: v.detach().cpu() for k, v in self.module.state_dict().items()}
        torch.save({"spec_sha256": _sha256(text), "state_dict": state}, folder / "weights.pt")
        return {"spec": str(folder / "spec.json"), "weights": str(folder / "weights.pt")}

    @classmethod
    def load(cls, spec_path: str | Path, weights_path: str | Path, *, device: str | None = None) -> FraudModel:
        """Read what :meth:`save` wrote; ``device`` defaults to CUDA when available, else CPU."""
        import torch

        text = Path(spec_path).read_text()
        spec = ModelSpec.from_json(text)
        module = build_module(spec)
        try:
            saved = torch.load(weights_path, map_location="cpu", weights_only=True)
            # Same shapes are not the same model: another vocabulary or scaling would load silently.
            if not isinstance(saved, dict) or "spec_sha256" not in saved:
                raise ModelFormatError(f"weights at {weights_path} were written by an older tidemark (no spec "
                                       "hash); retrain the model with `tidemark train`")
            if saved["spec_sha256"] != _sha256(text):
                raise ModelFormatError(f"weights at {weights_path} were not saved with the spec at {spec_path}; "
                                       "keep the two files of one model together (retrain if they were lost)")
            module.load_state_dict(saved["state_dict"])
        except (RuntimeError, OSError, EOFError, pickle.UnpicklingError) as exc:  # last: not a torch file
            raise ModelFormatError(f"weights at {weights_path} do not fit the spec next to them: {exc}") from None
        model = cls(spec, module)
        return model.to(device or ("cuda" if torch.cuda.is_available() else "cpu"))
