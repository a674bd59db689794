"""Counts of current data against a profile: additive, so chunks and Spark partitions just add up.

For a numeric column the current values of a chunk are sorted once (numpy's SIMD sort), then
every count is a binary search of the *profile's* points into that sorted chunk:

* PSI bin counts: ``searchsorted(chunk, edges, "left")`` — the definition's bin rule
  (``searchsorted(edges, x, "right")``: a value on an edge belongs to the bin above it), counted
  from the other side;
* KS: for each reference support point ``u_j``, how many current values are ``< u_j`` and
  ``<= u_j``. With the reference CDF known at the same points, these give the exact two-sample
  KS statistic (see :func:`monitoring.stats.ks_from_counts`), without sorting the union;
* below min / above max of the reference, and nulls.

A categorical column is mapped onto the reference categories plus one "unseen" bin.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Iterable
from dataclasses import dataclass, field

import numpy as np
import pandas as pd

from monitoring.profile import (
    CategoricalProfile,
    NumericProfile,
    ReferenceProfile,
    factorized_text,
    numeric_values,
)

__all__ = ["CategoricalCounts", "NumericCounts", "count_chunk", "merge"]


@dataclass
class NumericCounts:
    """Current-data counts for one numeric column (add chunks with ``+``)."""

    rows: int
    nulls: int
    bins: np.ndarray       # int64[len(edges) + 1]
    below: np.ndarray      # int64[len(support)]: current values < support[j]
    at_or_below: np.ndarray  # int64[len(support)]: current values <= support[j]
    under_min: int
    over_max: int

    def __add__(self, other: NumericCounts) -> NumericCounts:
        return NumericCounts(self.rows + other.rows, self.nulls + other.nulls, self.bins + other.bins,
                             self.below + other.below, self.at_or_below + other.at_or_below,
                             self.under_min + other.under_min, self.over_max + other.over_max)


@dataclass
class CategoricalCounts:
    """Current-data counts for one categorical column."""

    rows: int
    nulls: int
    counts: np.ndarray     # int64[len(categories) + 1]; the last bin counts unseen categories
    unseen: Counter[str] = field(default_factory=Counter)  # the most common unseen values

    def __add__(self, other: CategoricalCounts) -> CategoricalCounts:
        return CategoricalCounts(self.rows + other.rows, self.nulls + other.nulls, self.counts + other.counts,
                                 self.unseen + other.unseen)


ColumnCounts = NumericCounts | CategoricalCounts


def count_numeric(profile: NumericProfile, values: np.ndarray) -> NumericCounts:
    """Counts of one chunk of a numeric column (float64, NaN = null)."""
    present = np.sort(values[~np.isnan(values)])
    n = len(present)
    bins = np.diff(np.concatenate([[0], np.searchsorted(present, profile.edges, side="left"), [n]]))
    below = np.searchsorted(present, profile.support, side="left")
    at_or_below = np.searchsorted(present, profile.support, side="right")
    if np.isnan(profile.minimum):
        under = over = 0
    else:
        under = int(np.searchsorted(present, profile.minimum, side="left"))
        over = n - int(np.searchsorted(present, profile.maximum, side="right"))
    return NumericCounts(len(values), len(values) - n, bins.astype(np.int64), below.astype(np.int64),
                         at_or_below.astype(np.int64), under, over)


def count_categorical(profile: CategoricalProfile, series: pd.Series) -> CategoricalCounts:
    """Counts of one chunk of a categorical column.

    Values are hashed once (``pandas.factorize``); only the distinct values are turned into text
    and looked up among the reference categories, so a million rows cost one hash pass.
    """
    codes, texts = factorized_text(series)
    k = len(profile.categories)
    index = {c: i for i, c in enumerate(profile.categories)}
    slot = np.array([index.get(t, k) for t in texts], dtype=np.int64)
    per_value = np.bincount(codes[codes >= 0], minlength=len(texts))
    counts = np.bincount(slot, weights=per_value, minlength=k + 1).astype(np.int64) if len(texts) else \
        np.zeros(k + 1, dtype=np.int64)
    unseen = Counter({t: int(c) for t, c, s in zip(texts, per_value, slot, strict=True) if s == k and c})
    return CategoricalCounts(len(series), int((codes < 0).sum()), counts, Counter(dict(unseen.most_common(20))))


def count_chunk(profile: ReferenceProfile, frame: pd.DataFrame) -> dict[str, ColumnCounts]:
    """Counts for every profiled column present in ``frame``.

    (Spreading columns over threads was tried: no faster on 2 cores, so it stays serial.)
    """
    out: dict[str, ColumnCounts] = {}
    for name, col in profile.columns.items():
        if name not in frame.columns:
            continue
        if isinstance(col, NumericProfile):
            out[name] = count_numeric(col, numeric_values(name, frame[name]))
        else:
            out[name] = count_categorical(col, frame[name])
    return out


def merge(parts: Iterable[dict[str, ColumnCounts]]) -> dict[str, ColumnCounts]:
    """Add up the counts of chunks (or partitions)."""
    total: dict[str, ColumnCounts] = {}
    for part in parts:
        for name, counts in part.items():
            total[name] = counts if name not in total else total[name] + counts  # type: ignore[operator]
    return total
