"""Reference profiles: what a drift comparison needs to know about the training data, stored once.

A profile keeps, per column, everything :func:`monitoring.drift.compare` uses, so the reference
data is never read again:

* numeric: the PSI bin edges (unique values of ``numpy.quantile(ref, k/B)``, NaNs dropped), the
  reference count per bin, the sorted distinct reference values with cumulative counts (exact
  KS), the null count, min and max. Above ``ks_cap`` non-null values the KS support is a uniform
  random sample of ``ks_cap`` values (seeded); the report then says ``ks_reference="sample"``.
* categorical: each reference category (as text) with its count, and the null count.

``to_bytes``/``from_bytes`` give one self-describing blob (``.npz`` with a JSON header), small
enough to log as an MLflow artifact next to the model it describes.
"""

from __future__ import annotations

import io
import json
import zipfile
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any, ClassVar, Final

import numpy as np
import pandas as pd

from features.category_text import as_text as _as_text
from monitoring.errors import ProfileError

__all__ = ["CategoricalProfile", "NumericProfile", "ReferenceProfile"]

FORMAT: Final = "tidemark.reference_profile/1"
DEFAULT_KS_CAP: Final = 100_000


@dataclass(frozen=True)
class NumericProfile:
    """One numeric reference column."""

    name: str
    rows: int                 # reference rows, nulls included
    nulls: int
    edges: np.ndarray         # interior PSI edges, float64, strictly increasing
    bin_counts: np.ndarray    # int64[len(edges) + 1]
    support: np.ndarray       # sorted distinct values of the KS reference, float64
    cum_counts: np.ndarray    # int64: KS reference values <= support[j]
    sampled: bool             # the KS reference is a uniform sample of the column
    minimum: float
    maximum: float

    kind: ClassVar[str] = "numeric"

    @property
    def ks_n(self) -> int:
        """Size of the KS reference."""
        return int(self.cum_counts[-1]) if len(self.cum_counts) else 0


@dataclass(frozen=True)
class CategoricalProfile:
    """One categorical reference column; categories are compared as text."""

    name: str
    rows: int
    nulls: int
    categories: tuple[str, ...]
    counts: np.ndarray        # int64, per category

    kind: ClassVar[str] = "categorical"


ColumnProfile = NumericProfile | CategoricalProfile


@dataclass(frozen=True)
class ReferenceProfile:
    """Per-column reference statistics; build with :meth:`fit`."""

    columns: Mapping[str, ColumnProfile]
    rows: int
    bins: int
    ks_cap: int
    created_at: str = field(default_factory=lambda: datetime.now(UTC).isoformat())

    @classmethod
    def fit(cls, df: Any, *, categorical: Iterable[str] | None = None, bins: int = 10,
            ks_cap: int = DEFAULT_KS_CAP, seed: int = 0, columns: Sequence[str] | None = None
            ) -> ReferenceProfile:
        """Profile ``df`` (pandas or Spark DataFrame).

        ``categorical`` names the categorical columns; by default text, bool and category dtypes
        are categorical and numbers numeric (pass integer codes in ``categorical`` explicitly).
        ``bins`` is the number of PSI quantile bins; ``ks_cap`` bounds the stored KS reference.
        """
        if bins < 2:
            raise ProfileError(f"bins={bins}: PSI needs at least 2 quantile bins")
        if hasattr(df, "sparkSession"):
            from monitoring.spark_counts import fit_spark

            return fit_spark(cls, df, categorical=categorical, bins=bins, ks_cap=ks_cap, seed=seed,
                             columns=columns)
        if not isinstance(df, pd.DataFrame):
            raise ProfileError(f"fit takes a pandas or Spark DataFrame, not {type(df).__name__}")
        if df.empty:
            raise ProfileError("the reference frame has no rows; profile the training data")
        names = list(columns) if columns is not None else list(df.columns)
        missing = [c for c in names if c not in df.columns]
        if missing:
            raise ProfileError(f"column {missing[0]!r} is not in the reference frame; it has {list(df.columns)}")
        wanted = set(categorical or []) | {c for c in names if _is_categorical_dtype(df[c])}
        rng = np.random.default_rng(seed)
        profiles: dict[str, ColumnProfile] = {}
        for name in names:
            if name not in df.columns:
                raise ProfileError(f"column {name!r} is not in the reference frame")
            if name in wanted:
                profiles[name] = categorical_profile(name, df[name])
            else:
                profiles[name] = numeric_profile(name, numeric_values(name, df[name]), bins, ks_cap, rng)
        return cls(profiles, len(df), bins, ks_cap)

    # -- serialisation -------------------------------------------------------------------------

    def to_bytes(self) -> bytes:
        """One ``.npz`` blob: a JSON header and the arrays of every column."""
        arrays: dict[str, np.ndarray] = {}
        header: dict[str, Any] = {"format": FORMAT, "rows": self.rows, "bins": self.bins,
                                  "ks_cap": self.ks_cap, "created_at": self.created_at, "columns": []}
        for i, col in enumerate(self.columns.values()):
            meta: dict[str, Any] = {"name": col.name, "kind": col.kind, "rows": col.rows, "nulls": col.nulls}
            if isinstance(col, NumericProfile):
                meta |= {"sampled": col.sampled, "minimum": col.minimum, "maximum": col.maximum}
                for part in ("edges", "bin_counts", "support", "cum_counts"):
                    arrays[f"c{i}_{part}"] = getattr(col, part)
            else:
                meta["categories"] = list(col.categories)
                arrays[f"c{i}_counts"] = col.counts
            header["columns"].append(meta)
        arrays["header"] = np.frombuffer(json.dumps(header).encode(), dtype=np.uint8)
        buffer = io.BytesIO()
        np.savez_compressed(buffer, **arrays)  # type: ignore[arg-type]
        return buffer.getvalue()

    @classmethod
    def from_bytes(cls, blob: bytes) -> ReferenceProfile:
        """Read a profile written by :meth:`to_bytes`."""
        try:
            with np.load(io.BytesIO(blob), allow_pickle=False) as data:
                header = json.loads(bytes(data["header"]).decode())
                if header.get("format") != FORMAT:
                    raise ProfileError(f"not a tidemark reference profile (format {header.get('format')!r}, "
                                       f"expected {FORMAT!r})")
                columns: dict[str, ColumnProfile] = {}
                for i, meta in enumerate(header["columns"]):
                    columns[meta["name"]] = _column_from(meta, {k[len(f"c{i}_"):]: data[k] for k in data.files
                                                                if k.startswith(f"c{i}_")})
        except (OSError, ValueError, KeyError, EOFError, zipfile.BadZipFile) as exc:
            raise ProfileError(f"cannot read the reference profile ({exc}); was it written by "
                               "ReferenceProfile.to_bytes?") from None
        return cls(columns, header["rows"], header["bins"], header["ks_cap"], header["created_at"])


def _column_from(meta: dict[str, Any], arrays: dict[str, np.ndarray]) -> ColumnProfile:
    if meta["kind"] == "numeric":
        return NumericProfile(meta["name"], meta["rows"], meta["nulls"], arrays["edges"], arrays["bin_counts"],
                              arrays["support"], arrays["cum_counts"], meta["sampled"], meta["minimum"],
                              meta["maximum"])
    return CategoricalProfile(meta["name"], meta["rows"], meta["nulls"], tuple(meta["categories"]),
                              arrays["counts"])


def _is_categorical_dtype(series: pd.Series) -> bool:
    dtype = series.dtype
    return bool(pd.api.types.is_bool_dtype(dtype) or isinstance(dtype, pd.CategoricalDtype)
                or pd.api.types.is_string_dtype(dtype) or pd.api.types.is_object_dtype(dtype))


def numeric_values(name: str, series: pd.Series) -> np.ndarray:
    """The column as float64 with NaN for nulls; a clear error for text in a numeric column.
    Timestamps become nanoseconds since the epoch (UTC)."""
    if pd.api.types.is_datetime64_any_dtype(series.dtype):
        stamps = series.to_numpy(dtype="datetime64[ns]")
        out = stamps.view(np.int64).astype(np.float64)
        out[np.isnat(stamps)] = np.nan
        return out
    if pd.api.types.is_numeric_dtype(series.dtype) and not pd.api.types.is_bool_dtype(series.dtype):
        return series.to_numpy(dtype=np.float64, na_value=np.nan)
    converted = pd.to_numeric(series, errors="coerce")
    bad = converted.isna() & series.notna()
    if bad.any():
        from monitoring.errors import DriftInputError

        raise DriftInputError(f"column {name!r} is numeric in the profile but holds values such as "
                              f"{series[bad].head(3).tolist()!r}; fix the data, or profile it as "
                              "categorical (categorical=[...])")
    return converted.to_numpy(dtype=np.float64, na_value=np.nan)


def factorized_text(series: pd.Series) -> tuple[np.ndarray, list[str]]:
    """(codes, distinct values as text): code -1 for nulls. Categories are compared as text, so the
    code 3 and the string "3" are one category (as ``astype("string")`` would write them)."""
    if isinstance(series.dtype, pd.CategoricalDtype):
        series = pd.Series(np.asarray(series, dtype=object), index=series.index)
    if pd.api.types.is_object_dtype(series.dtype) and pd.api.types.infer_dtype(series, skipna=True) != "string":
        series = series.map(_bool_as_text, na_action="ignore")  # factorize would merge True with 1
    codes, uniques = pd.factorize(series, use_na_sentinel=True)
    return np.asarray(codes, dtype=np.int64), [_as_text(u) for u in uniques]


def _bool_as_text(value: Any) -> Any:
    return str(bool(value)) if isinstance(value, bool | np.bool_) else value


def numeric_profile(name: str, values: np.ndarray, bins: int, ks_cap: int, rng: np.random.Generator
                    ) -> NumericProfile:
    """Profile one numeric column (``values`` float64, NaN = null)."""
    present = values[~np.isnan(values)]
    nulls = len(values) - len(present)
    if not len(present):
        empty_f, empty_i = np.zeros(0), np.zeros(0, dtype=np.int64)
        return NumericProfile(name, len(values), nulls, empty_f, np.zeros(1, np.int64), empty_f, empty_i,
                              False, float("nan"), float("nan"))
    ordered = np.sort(present)
    edges = psi_edges(ordered, bins)
    # x is in bin searchsorted(edges, x, "right"): values below edge k (strictly) are in bins < k+1
    bin_counts = np.diff(np.concatenate([[0], np.searchsorted(ordered, edges, side="left"), [len(ordered)]]))
    sampled = len(ordered) > ks_cap
    ks_values = np.sort(rng.choice(ordered, size=ks_cap, replace=False)) if sampled else ordered
    support, first = np.unique(ks_values, return_index=True)
    cum_counts = np.append(first[1:], len(ks_values)).astype(np.int64)
    return NumericProfile(name, len(values), nulls, edges, bin_counts.astype(np.int64), support, cum_counts,
                          sampled, float(ordered[0]), float(ordered[-1]))


def psi_edges(values: np.ndarray, bins: int) -> np.ndarray:
    """Interior PSI edges: unique ``numpy.quantile(values, k/bins)`` for k = 1..bins-1, NaNs dropped."""
    with np.errstate(invalid="ignore"):  # inf - inf between infinite neighbours: NaN, dropped
        edges = np.quantile(values, np.arange(1, bins) / bins)
    return np.unique(edges[~np.isnan(edges)])


def categorical_profile(name: str, series: pd.Series) -> CategoricalProfile:
    """Profile one categorical column."""
    codes, texts = factorized_text(series)
    per_value = np.bincount(codes[codes >= 0], minlength=len(texts))
    totals: dict[str, int] = {}
    for text, count in zip(texts, per_value.tolist(), strict=True):  # "3" and 3 merge here
        totals[text] = totals.get(text, 0) + count
    categories = sorted(totals)
    return CategoricalProfile(name, len(series), int((codes < 0).sum()), tuple(categories),
                              np.array([totals[c] for c in categories], dtype=np.int64))


