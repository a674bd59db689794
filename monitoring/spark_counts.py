"""Drift counts and reference profiles on Spark, identical to the pandas path.

``count_spark(profile, sdf)`` is :func:`monitoring.drift.compare` on a Spark DataFrame: one pass
over the data on the executors (``mapInArrow``). Each partition's Arrow batches are gathered into
chunks of up to a million rows, counted with :func:`monitoring.counting.count_chunk` against the
profile, added up with :func:`monitoring.counting.merge`, and sent to the driver as one row (a
compressed pickle; the cumulative KS counts are delta-encoded first); the driver adds the
partitions. The counts are exact integers, so they equal ``count_chunk`` on the whole frame and
PSI, KS and chi² are identical to the pandas result. The KS "ECDF grid" is the profile's stored
reference support itself: the KS statistic is exact against the stored reference, with error
bound 0 (when the profile holds a sample of ``ks_cap`` values, it is exact against that sample).
The unseen-category examples are, as on pandas across chunks, summed from each chunk's 20 most
common.

``fit_spark`` is :meth:`ReferenceProfile.fit` on a Spark DataFrame and gives the profile the
pandas ``fit`` gives on the same values:

1. one aggregation: rows, and per numeric column the non-null count, min and max;
2. categorical columns, one ``mapInArrow`` pass: counts per category text and nulls;
3. numeric columns with at most ``ks_cap`` values: one aggregation collects the values
   (``collect_list``), and the driver profiles them with the pandas code itself;
4. numeric columns with more: the PSI edges are ``numpy.quantile``'s, bit for bit: Spark's exact
   ``percentile_disc`` returns the two order statistics around each of numpy's virtual indexes
   (Spark's interpolating ``percentile`` rounds differently and gives finite edges where numpy
   gives NaN next to ±inf), and the driver interpolates them with numpy's own formula; one
   aggregation counts the values < each edge; the KS reference is a uniform random sample of
   exactly ``ks_cap`` values (``orderBy(rand(seed)).limit(ks_cap)``, reproducible for the same
   data and partitioning, not the sample pandas draws). ``percentile_disc`` keeps every distinct
   value of the column in memory on one executor.

Values, the same on both functions so that a Spark-fitted profile compares with Spark data:

* numeric columns are float64: integers and decimals cast to double, timestamps as epoch
  nanoseconds; NaN and null are both null; ±inf are values;
* categorical columns (by default every type but numbers and timestamps) are compared as the
  text pandas gives them (:func:`features.category_text.category_text`) after one Arrow conversion in
  which integers stay integers: the code 3 is "3" in every batch, with or without nulls (pandas
  turns an integer column with nulls into float64; ``category_text`` writes its whole values as
  "3" too, so both paths agree).
"""

from __future__ import annotations

import logging
import pickle
import re
import zlib
from collections import Counter
from collections.abc import Iterable, Iterator, Sequence
from dataclasses import dataclass, replace
from typing import TYPE_CHECKING, Any, Final

import numpy as np
import pandas as pd
import pyarrow as pa

from features.category_text import category_text
from monitoring.counting import ColumnCounts, NumericCounts, count_chunk, merge
from monitoring.errors import DriftInputError, ProfileError
from monitoring.profile import (
    CategoricalProfile,
    ColumnProfile,
    NumericProfile,
    ReferenceProfile,
    numeric_profile,
)

if TYPE_CHECKING:
    from pyspark.sql import Column, DataFrame, Row
    from pyspark.sql.types import DataType

__all__ = ["arrow_frame", "count_spark", "fit_spark"]

log = logging.getLogger(__name__)

#: Rows counted at once on an executor, as ``compare`` chunks a pandas frame.
CHUNK_ROWS: Final = 1_000_000
_LEGACY_DISC: Final = "spark.sql.legacy.percentileDiscCalculation"
_NULLABLE_INTS: Final[dict[pa.DataType, Any]] = {
    pa.int8(): pd.Int8Dtype(), pa.int16(): pd.Int16Dtype(), pa.int32(): pd.Int32Dtype(), pa.int64(): pd.Int64Dtype(),
}


def arrow_frame(data: pa.Table | pa.RecordBatch) -> pd.DataFrame:
    """Arrow data as the pandas frame the counting code takes; integer columns become nullable
    ``Int64`` (not float64 when they hold a null), so a category's text never depends on the batch."""
    return data.to_pandas(types_mapper=_NULLABLE_INTS.get)


# -- compare ---------------------------------------------------------------------------------------


def count_spark(profile: ReferenceProfile, sdf: DataFrame, chunk_rows: int = CHUNK_ROWS
                ) -> dict[str, ColumnCounts]:
    """Counts of every profiled column of ``sdf`` against ``profile``, in one pass on the executors."""
    types = {f.name: f.dataType for f in sdf.schema.fields}
    present = [name for name in profile.columns if name in types]
    if not present:
        return {}
    inputs = [_count_input(profile.columns[name], name, types[name]).alias(name) for name in present]
    counter = _PartitionCounts(profile.to_bytes(), chunk_rows)
    parts = _collect_or_input_error(sdf.select(*inputs).mapInArrow(counter, "counts binary"))
    log.debug("counted %d columns in %d partitions", len(present), len(parts))
    return merge(_unpack(bytes(row["counts"])) for row in parts)


def _collect_or_input_error(counted: DataFrame) -> list[Row]:
    """Collect; an executor's :class:`DriftInputError` (text in a numeric column) is raised as one here."""
    from pyspark.errors import PythonException

    try:
        return counted.collect()
    except PythonException as exc:
        found = re.search(r"DriftInputError: (.+)", str(exc))
        if found is None:
            raise
        raise DriftInputError(found.group(1)) from exc


def _count_input(col: ColumnProfile, name: str, dtype: DataType) -> Column:
    if isinstance(col, NumericProfile) and _is_numeric_type(dtype):
        return _as_double(name, dtype)
    return _quoted(name)  # as it is: the pandas code turns it into text or numbers, or says why not


@dataclass(frozen=True)
class _PartitionCounts:
    """Runs on an executor: the counts of one partition, as one row (none for an empty partition)."""

    profile_blob: bytes
    chunk_rows: int

    def __call__(self, batches: Iterator[pa.RecordBatch]) -> Iterator[pa.RecordBatch]:
        profile = ReferenceProfile.from_bytes(self.profile_blob)
        total = merge(count_chunk(profile, arrow_frame(chunk)) for chunk in _chunks(batches, self.chunk_rows))
        if total:
            yield _one_row("counts", _pack(total))


def _pack(counts: dict[str, ColumnCounts]) -> bytes:
    # below / at_or_below are cumulative over the reference support (up to ks_cap points each):
    # their differences are mostly zeros and compress to a fraction of the raw arrays.
    slim = {name: replace(c, below=np.diff(c.below, prepend=0), at_or_below=np.diff(c.at_or_below, prepend=0))
            if isinstance(c, NumericCounts) else c for name, c in counts.items()}
    return zlib.compress(pickle.dumps(slim, protocol=pickle.HIGHEST_PROTOCOL), 1)


def _unpack(blob: bytes) -> dict[str, ColumnCounts]:
    # Our own executor -> driver channel: these bytes were written by _pack in this job.
    slim: dict[str, ColumnCounts] = pickle.loads(zlib.decompress(blob))
    return {name: replace(c, below=np.cumsum(c.below), at_or_below=np.cumsum(c.at_or_below))
            if isinstance(c, NumericCounts) else c for name, c in slim.items()}


def _chunks(batches: Iterable[pa.RecordBatch], rows: int) -> Iterator[pa.Table]:
    pending: list[pa.RecordBatch] = []
    size = 0
    for batch in batches:
        pending.append(batch)
        size += batch.num_rows
        if size >= rows:
            yield pa.Table.from_batches(pending)
            pending, size = [], 0
    if pending:
        yield pa.Table.from_batches(pending)


def _one_row(name: str, blob: bytes) -> pa.RecordBatch:
    return pa.RecordBatch.from_arrays([pa.array([blob], type=pa.binary())], names=[name])


# -- fit -------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class _Summary:
    """Aggregation 1: rows, and per numeric column (by alias) the non-null count, min and max."""

    rows: int
    present: dict[str, int]
    minimum: dict[str, float]
    maximum: dict[str, float]


def fit_spark(cls: type[ReferenceProfile], sdf: DataFrame, *, categorical: Iterable[str] | None, bins: int,
              ks_cap: int, seed: int, columns: Sequence[str] | None) -> ReferenceProfile:
    """Profile a Spark DataFrame as :meth:`ReferenceProfile.fit` profiles a pandas one.

    By default string, boolean and every other non-numeric type (dates included, as in pandas)
    are categorical, numbers and timestamps numeric.
    """
    types = {f.name: f.dataType for f in sdf.schema.fields}
    names = list(columns) if columns is not None else list(sdf.columns)
    for name in names:
        if name not in types:
            raise ProfileError(f"column {name!r} is not in the reference frame; it has {sorted(types)}")
    wanted = set(categorical or []) | {name for name in names if not _is_numeric_type(types[name])}
    numeric = [name for name in names if name not in wanted]
    alias = {name: f"v{i}" for i, name in enumerate(numeric)}
    values = sdf.select(*[_present(_as_double(name, types[name])).alias(alias[name]) for name in numeric])
    summary = _summarise(values, list(alias.values())) if numeric else _Summary(sdf.count(), {}, {}, {})
    if summary.rows == 0:
        raise ProfileError("the reference frame has no rows; profile the training data")
    profiles = _categorical_profiles(sdf, [name for name in names if name in wanted], summary.rows)
    small = [name for name in numeric if summary.present[alias[name]] <= ks_cap]
    profiles |= _collected_profiles(values, {n: alias[n] for n in small}, summary, bins, ks_cap, seed)
    large = {name: alias[name] for name in numeric if name not in small}
    profiles |= _sampled_profiles(values, large, summary, bins, ks_cap, seed)
    return cls({name: profiles[name] for name in names}, summary.rows, bins, ks_cap)


def _summarise(values: DataFrame, aliases: list[str]) -> _Summary:
    from pyspark.sql import functions as F

    aggs = [F.count(F.lit(1)).alias("rows")]
    for a in aliases:
        aggs += [F.count(a).alias(f"n_{a}"), F.min(a).alias(f"min_{a}"), F.max(a).alias(f"max_{a}")]
    row = values.agg(*aggs).collect()[0]
    return _Summary(int(row["rows"]), {a: int(row[f"n_{a}"]) for a in aliases},
                    {a: _float(row[f"min_{a}"]) for a in aliases}, {a: _float(row[f"max_{a}"]) for a in aliases})


def _categorical_profiles(sdf: DataFrame, names: list[str], rows: int) -> dict[str, ColumnProfile]:
    if not names:
        return {}
    counter = _PartitionCategories(tuple(names), CHUNK_ROWS)
    parts = sdf.select(*[_quoted(n).alias(n) for n in names]).mapInArrow(counter, "counts binary").collect()
    nulls: Counter[str] = Counter()
    counts: dict[str, Counter[str]] = {name: Counter() for name in names}
    for row in parts:
        part_nulls, part_counts = pickle.loads(zlib.decompress(bytes(row["counts"])))  # ours, as in _unpack
        nulls.update(part_nulls)
        for name in names:
            counts[name].update(part_counts[name])
    profiles: dict[str, ColumnProfile] = {}
    for name in names:
        categories = np.array(list(counts[name]), dtype=str)
        order = np.argsort(categories)  # the order categorical_profile gives
        profiles[name] = CategoricalProfile(name, rows, nulls[name], tuple(str(c) for c in categories[order]),
                                            np.array(list(counts[name].values()), dtype=np.int64)[order])
    return profiles


@dataclass(frozen=True)
class _PartitionCategories:
    """Runs on an executor: per categorical column, the count of each category text and of nulls."""

    names: tuple[str, ...]
    chunk_rows: int

    def __call__(self, batches: Iterator[pa.RecordBatch]) -> Iterator[pa.RecordBatch]:
        nulls: Counter[str] = Counter()
        counts: dict[str, Counter[str]] = {name: Counter() for name in self.names}
        for chunk in _chunks(batches, self.chunk_rows):
            frame = arrow_frame(chunk)
            for name in self.names:
                text = category_text(frame[name])
                nulls[name] += int(text.isna().sum())
                counts[name].update(text.value_counts(dropna=True, sort=False).to_dict())
        yield _one_row("counts", zlib.compress(pickle.dumps((nulls, counts), protocol=pickle.HIGHEST_PROTOCOL), 1))


def _collected_profiles(values: DataFrame, alias: dict[str, str], summary: _Summary, bins: int, ks_cap: int,
                        seed: int) -> dict[str, ColumnProfile]:
    """Columns of at most ks_cap values: all of them to the driver, profiled by the pandas code."""
    from pyspark.sql import functions as F

    if not alias:
        return {}
    table = values.agg(*[F.collect_list(a).alias(a) for a in alias.values()]).toArrow()
    rng = np.random.default_rng(seed)  # not drawn from: no column here is sampled
    profiles: dict[str, ColumnProfile] = {}
    for name, a in alias.items():
        present = table.column(a).combine_chunks().flatten().to_numpy(zero_copy_only=False).astype(np.float64)
        col = numeric_profile(name, present, bins, ks_cap, rng)
        profiles[name] = replace(col, rows=summary.rows, nulls=summary.rows - len(present))
    return profiles


def _sampled_profiles(values: DataFrame, alias: dict[str, str], summary: _Summary, bins: int, ks_cap: int,
                      seed: int) -> dict[str, ColumnProfile]:
    """Columns of more than ks_cap values: exact edges and bin counts, a sample for KS."""
    if not alias:
        return {}
    legacy = str(values.sparkSession.conf.get(_LEGACY_DISC, "false")).lower() == "true"
    edges = _exact_edges(values, alias, summary, bins, legacy)
    below = _counts_below(values, alias, edges)
    rng = np.random.default_rng(seed)
    profiles: dict[str, ColumnProfile] = {}
    for i, (name, a) in enumerate(alias.items()):
        n = summary.present[a]
        bin_counts = np.diff(np.concatenate([[0], below[name], [n]])).astype(np.int64)
        sample = numeric_profile(name, _ks_sample(values, a, ks_cap, seed + i), bins, ks_cap, rng)
        profiles[name] = NumericProfile(name, summary.rows, summary.rows - n, edges[name], bin_counts,
                                        sample.support, sample.cum_counts, True, summary.minimum[a],
                                        summary.maximum[a])
    return profiles


def _exact_edges(values: DataFrame, alias: dict[str, str], summary: _Summary, bins: int, legacy: bool
                 ) -> dict[str, np.ndarray]:
    """``psi_edges`` of each column, from the order statistics numpy.quantile interpolates."""
    from pyspark.sql import functions as F

    q = np.arange(1, bins) / bins
    plans = {name: _quantile_plan(summary.present[a], q) for name, a in alias.items()}
    ranks = {name: np.unique(np.concatenate([lo, hi])) for name, (lo, hi, _) in plans.items()}
    aggs = []
    for name, a in alias.items():
        shares = ", ".join(f"{p!r}D" for p in _disc_shares(ranks[name], summary.present[a], legacy))
        aggs.append(F.expr(f"percentile_disc(array({shares})) WITHIN GROUP (ORDER BY {a})").alias(a))
    row = values.agg(*aggs).collect()[0]
    edges = {}
    for name, a in alias.items():
        lo, hi, gamma = plans[name]
        stats = np.asarray(row[a], dtype=np.float64)
        raw = _lerp(stats[np.searchsorted(ranks[name], lo)], stats[np.searchsorted(ranks[name], hi)], gamma)
        edges[name] = np.unique(raw[~np.isnan(raw)])
    return edges


def _quantile_plan(n: int, q: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """numpy.quantile's "linear" method on n sorted values, as numpy computes it: for each q the
    ranks of the two values it interpolates and the weight (an index at or past the last value
    takes the last value twice, with the weight numpy gives it)."""
    virtual = (n - 1) * q
    above = virtual >= n - 1
    previous = np.where(above, -1.0, np.floor(virtual))
    gamma = virtual - previous
    lo = np.where(above, n - 1, previous).astype(np.int64)
    hi = np.where(above, n - 1, previous + 1).astype(np.int64)
    return lo, hi, gamma


def _lerp(a: np.ndarray, b: np.ndarray, t: np.ndarray) -> np.ndarray:
    """numpy's quantile interpolation, operation for operation (so NaN where numpy gives NaN)."""
    with np.errstate(invalid="ignore"):  # inf - inf: NaN, as in numpy.quantile
        diff = b - a
        return np.where(t >= 0.5, b - diff * (1 - t), a + diff * t)


def _disc_shares(ranks: np.ndarray, n: int, legacy: bool) -> list[float]:
    """Percentages at which ``percentile_disc`` returns exactly the values of these 0-based ranks,
    half a rank away from any rounding boundary."""
    if legacy:  # x[floor((n - 1) * p)]
        return [1.0 if r >= n - 1 else (int(r) + 0.5) / (n - 1) for r in ranks]
    return [(int(r) + 0.5) / n for r in ranks]  # x[ceil(n * p) - 1]


def _counts_below(values: DataFrame, alias: dict[str, str], edges: dict[str, np.ndarray]
                        ) -> dict[str, np.ndarray]:
    from pyspark.sql import functions as F

    aggs = [F.count(F.when(F.col(a) < F.lit(float(e)), 1)).alias(f"{a}_{k}")  # on an edge: bin above
            for name, a in alias.items() for k, e in enumerate(edges[name])]
    counted = values.agg(*aggs).collect()[0].asDict() if aggs else {}
    return {name: np.array([counted[f"{a}_{k}"] for k in range(len(edges[name]))], dtype=np.int64)
            for name, a in alias.items()}


def _ks_sample(values: DataFrame, a: str, ks_cap: int, seed: int) -> np.ndarray:
    """A uniform random sample of exactly ks_cap non-null values (the ks_cap smallest random keys)."""
    from pyspark.sql import functions as F

    picked = values.select(a).where(F.col(a).isNotNull()).orderBy(F.rand(seed)).limit(ks_cap)
    return picked.toArrow().column(0).to_numpy().astype(np.float64)


# -- Spark types and expressions -------------------------------------------------------------------


def _is_numeric_type(dtype: DataType) -> bool:
    from pyspark.sql.types import NumericType, TimestampNTZType, TimestampType

    return isinstance(dtype, NumericType | TimestampType | TimestampNTZType)


def _quoted(name: str) -> Column:
    from pyspark.sql import functions as F

    return F.col("`" + name.replace("`", "``") + "`")


def _as_double(name: str, dtype: DataType) -> Column:
    """A numeric column as double; a timestamp as epoch nanoseconds (what pandas counts for datetime64[ns])."""
    from pyspark.sql import functions as F
    from pyspark.sql.types import TimestampNTZType, TimestampType

    column = _quoted(name)
    if isinstance(dtype, TimestampType | TimestampNTZType):
        return F.unix_micros(column.cast("timestamp")).cast("double") * 1000.0
    return column.cast("double")


def _present(column: Column) -> Column:
    """NaN as null, like the pandas path (``isnan(null)`` is false, so nulls stay null)."""
    from pyspark.sql import functions as F

    return F.when(~F.isnan(column), column)


def _float(value: Any) -> float:
    return float("nan") if value is None else float(value)
