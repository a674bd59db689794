"""Drift of current data against a reference profile: ``from monitoring.drift import ReferenceProfile, compare``.

    >>> profile = ReferenceProfile.fit(training_df, categorical=["channel"])
    >>> report = compare(profile, current_df)          # pandas, a Parquet path, or Spark
    >>> report.drifted_columns, report.to_dict()

Per column: PSI (numeric and categorical), the two-sample KS statistic and its asymptotic p-value
(numeric), the chi² homogeneity test (categorical), null shares, the share of current values
outside the reference range, the share of unseen categories. p-values are adjusted across
columns with Benjamini–Hochberg. A column drifts when PSI >= ``psi`` or when its adjusted p-value
< ``alpha`` *and* the effect is large enough (KS D >= ``ks_d`` / total variation >= ``tvd``): on
millions of rows a p-value alone flags differences too small to matter.
"""

from __future__ import annotations

import math
from collections.abc import Iterator
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from monitoring.counting import CategoricalCounts, ColumnCounts, NumericCounts, count_chunk, merge
from monitoring.errors import DriftInputError
from monitoring.profile import CategoricalProfile, NumericProfile, ReferenceProfile
from monitoring.stats import benjamini_hochberg, chi2_homogeneity, ks_from_counts, ks_pvalue, psi, total_variation

__all__ = ["ColumnDrift", "DriftReport", "DriftThresholds", "ReferenceProfile", "compare", "json_safe"]

_CHUNK_ROWS = 1_000_000


@dataclass(frozen=True)
class DriftThresholds:
    """When a column counts as drifted (all configurable)."""

    psi: float = 0.2
    alpha: float = 0.05     # on Benjamini–Hochberg adjusted p-values
    ks_d: float = 0.1       # minimum KS D for a significant numeric column to count
    tvd: float = 0.1        # minimum total variation for a significant categorical column


@dataclass
class ColumnDrift:
    """One column's statistics and decision."""

    column: str
    kind: str                              # numeric | categorical
    status: str = "compared"               # compared | missing | empty
    psi: float | None = None
    test: str | None = None                # ks | chi2
    statistic: float | None = None         # KS D, or the chi² statistic
    effect: float | None = None            # KS D, or the total variation distance
    p_value: float | None = None
    p_value_adjusted: float | None = None
    null_share_reference: float | None = None
    null_share_current: float | None = None
    out_of_range_share: float | None = None   # numeric: current values outside [min, max]
    unseen_share: float | None = None         # categorical: current values of unseen categories
    unseen_examples: list[str] = field(default_factory=list)
    ks_reference: str | None = None           # "exact" or "sample" (of ks_cap values)
    rows_current: int = 0
    drifted: bool = False
    rule: str | None = None                   # which rule decided "drifted"


@dataclass
class DriftReport:
    """The comparison of one current data set with a reference profile."""

    columns: list[ColumnDrift]
    thresholds: DriftThresholds
    rows_reference: int
    rows_current: int
    extra_columns: list[str]
    profile_created_at: str

    @property
    def drifted_columns(self) -> list[str]:
        return [c.column for c in self.columns if c.drifted]

    @property
    def drift_share(self) -> float:
        """Share of profiled columns that drifted."""
        return len(self.drifted_columns) / len(self.columns) if self.columns else 0.0

    def column(self, name: str) -> ColumnDrift:
        """The result for column ``name``."""
        found = next((c for c in self.columns if c.column == name), None)
        if found is None:
            raise KeyError(f"no column {name!r} in the report; columns: {[c.column for c in self.columns]}")
        return found

    def to_dict(self) -> dict[str, Any]:
        """JSON-safe: NaN and infinities become None."""
        return json_safe({
            "rows_reference": self.rows_reference, "rows_current": self.rows_current,
            "drift_share": self.drift_share, "drifted_columns": self.drifted_columns,
            "extra_columns": self.extra_columns, "thresholds": asdict(self.thresholds),
            "profile_created_at": self.profile_created_at,
            "columns": [asdict(c) for c in self.columns],
        })


def compare(profile: ReferenceProfile, current: Any, *, thresholds: DriftThresholds | None = None,
            chunk_rows: int = _CHUNK_ROWS) -> DriftReport:
    """Compare ``current`` (pandas DataFrame, Parquet path, or Spark DataFrame) with ``profile``."""
    thresholds = thresholds or DriftThresholds()
    columns_present, counts = _counts(profile, current, chunk_rows)
    rows = max((c.rows for c in counts.values()), default=0) or _row_count(current)
    if rows == 0:
        raise DriftInputError("the current data has no rows; nothing to compare (check the time "
                              "window or the path)")
    results = [_column(profile.columns[name], counts.get(name)) for name in profile.columns]
    _decide(results, thresholds)
    extra = sorted(set(columns_present) - set(profile.columns))
    return DriftReport(results, thresholds, profile.rows, rows, extra, profile.created_at)


def _counts(profile: ReferenceProfile, current: Any, chunk_rows: int) -> tuple[list[str], dict[str, ColumnCounts]]:
    if isinstance(current, pd.DataFrame):
        return list(current.columns), merge(count_chunk(profile, current.iloc[i:i + chunk_rows])
                                            for i in range(0, max(len(current), 1), chunk_rows))
    if isinstance(current, str | Path):
        return _parquet_counts(profile, Path(current), chunk_rows)
    if hasattr(current, "sparkSession"):
        from monitoring.spark_counts import count_spark

        return list(current.columns), count_spark(profile, current)
    raise DriftInputError(f"current data is a {type(current).__name__}; pass a pandas DataFrame, a "
                          "Parquet path or a Spark DataFrame")


def _parquet_counts(profile: ReferenceProfile, path: Path, chunk_rows: int
                    ) -> tuple[list[str], dict[str, ColumnCounts]]:

    if not path.exists():
        raise DriftInputError(f"no Parquet data at {path}")
    dataset = _dataset(path)
    names = dataset.schema.names
    wanted = [c for c in profile.columns if c in names]

    def chunks() -> Iterator[dict[str, ColumnCounts]]:
        for batch in dataset.to_batches(columns=wanted, batch_size=chunk_rows):
            yield count_chunk(profile, batch.to_pandas())

    return names, merge(chunks())


def _column(col: NumericProfile | CategoricalProfile, counts: ColumnCounts | None) -> ColumnDrift:
    result = ColumnDrift(col.name, col.kind,
                         null_share_reference=col.nulls / col.rows if col.rows else None)
    if counts is None:
        result.status = "missing"
        return result
    result.rows_current = counts.rows
    result.null_share_current = counts.nulls / counts.rows if counts.rows else None
    present = counts.rows - counts.nulls
    if present == 0 or col.rows == col.nulls:
        result.status = "empty"  # nothing to compare on one side (all null)
        return result
    if isinstance(col, NumericProfile) and isinstance(counts, NumericCounts):
        # Missing is a bin of its own: a column that is mostly null is judged on its whole
        # distribution, not on the handful of values it has (22 of 686 rows gave PSI 1.6 on noise).
        result.psi = psi(np.append(col.bin_counts, col.nulls), np.append(counts.bins, counts.nulls))
        result.test = "ks"
        result.statistic = result.effect = ks_from_counts(col.cum_counts, col.ks_n, counts.below,
                                                          counts.at_or_below, present)
        result.p_value = ks_pvalue(result.statistic, col.ks_n, present)
        result.out_of_range_share = (counts.under_min + counts.over_max) / present
        result.ks_reference = "sample" if col.sampled else "exact"
    elif isinstance(col, CategoricalProfile) and isinstance(counts, CategoricalCounts):
        ref = np.append(col.counts, 0)
        result.psi = psi(np.append(ref, col.nulls), np.append(counts.counts, counts.nulls))
        result.test = "chi2"
        result.statistic, result.p_value = chi2_homogeneity(ref, counts.counts)
        result.effect = total_variation(ref, counts.counts)
        result.unseen_share = int(counts.counts[-1]) / present
        ranked = sorted(counts.unseen.items(), key=lambda kv: (-kv[1], kv[0]))  # same on any chunking
        result.unseen_examples = [k for k, _ in ranked[:5]]
    return result


def _decide(results: list[ColumnDrift], t: DriftThresholds) -> None:
    adjusted = benjamini_hochberg(np.array([np.nan if r.p_value is None else r.p_value for r in results]))
    for r, p_adj in zip(results, adjusted, strict=True):
        r.p_value_adjusted = None if np.isnan(p_adj) else float(p_adj)
        min_effect = t.ks_d if r.kind == "numeric" else t.tvd
        if r.status == "missing":
            r.drifted, r.rule = True, "missing column (schema drift)"
        elif r.status == "empty":
            became_empty = r.null_share_current == 1.0 and (r.null_share_reference or 0) < 1.0
            became_full = r.null_share_reference == 1.0 and (r.null_share_current or 0) < 1.0
            r.drifted = became_empty or became_full
            r.rule = ("all current values are null" if became_empty else
                      "the reference was all null; current has values" if became_full else None)
        elif r.psi is not None and r.psi >= t.psi:
            r.drifted, r.rule = True, f"psi {r.psi:.3f} >= {t.psi}"
        elif (r.p_value_adjusted is not None and r.p_value_adjusted < t.alpha
              and r.effect is not None and r.effect >= min_effect):
            name = "KS D" if r.test == "ks" else "total variation"
            r.drifted, r.rule = True, (f"{r.test} adjusted p {r.p_value_adjusted:.2g} < {t.alpha} and "
                                       f"{name} {r.effect:.3f} >= {min_effect}")


def _dataset(path: Path) -> Any:
    """A Parquet dataset whose hive partition values stay text: inferred types would turn the
    partition ``day=01`` into the number 1 and the category "1", unseen in a profile with "01"."""
    import pyarrow as pa
    import pyarrow.dataset as ds

    found = ds.dataset(str(path), format="parquet", partitioning="hive")
    root = Path(path)
    names = sorted({part.split("=", 1)[0] for file in found.files
                    for part in Path(file).relative_to(root).parts[:-1] if "=" in part})
    if not names:
        return found
    text = ds.HivePartitioning.discover(schema=pa.schema([(n, pa.string()) for n in names]))
    return ds.dataset(str(path), format="parquet", partitioning=text)


def _row_count(current: Any) -> int:
    """Rows of data in which no profiled column was found (so nothing was counted)."""
    if isinstance(current, pd.DataFrame):
        return len(current)
    if isinstance(current, str | Path):

        return int(_dataset(Path(current)).count_rows())
    return int(current.count()) if hasattr(current, "sparkSession") else 0


def json_safe(value: Any) -> Any:
    """``value`` with numpy scalars as Python ones and NaN/infinities as None, recursively."""
    if isinstance(value, dict):
        return {str(k): json_safe(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [json_safe(v) for v in value]
    if isinstance(value, np.generic):
        value = value.item()
    if isinstance(value, float) and not math.isfinite(value):
        return None
    return value
