"""Generated data for ``benchmarks/drift.py``: reference and current frames with known drift.

Seeded numpy, one independent stream per (data set, column, row chunk), so any chunk can be made
alone and 10M-row frames are built a chunk at a time.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
from pit_data import short

CHUNK_ROWS = 1_000_000          # data are generated (and written) this many rows at a time
NUMERIC_KINDS = ("normal", "lognormal", "exponential", "uniform", "poisson", "normal_nulls")


@dataclass(frozen=True)
class Size:
    """Rows of each data set and total columns; numeric : categorical = 5 : 1."""

    rows: int
    columns: int

    @property
    def numeric(self) -> int:
        return max(1, round(self.columns * 5 / 6))

    @property
    def categorical(self) -> int:
        return self.columns - self.numeric

    @property
    def label(self) -> str:
        return f"{short(self.rows)} x {self.columns}"


# --- data ---------------------------------------------------------------------------------------


def column_rng(seed: int, role: int, column: int, chunk: int) -> np.random.Generator:
    """One independent stream per (data set, column, row chunk): any chunk can be made alone."""
    return np.random.default_rng([seed, role, column, chunk])


def numeric_drift(j: int) -> tuple[float, float]:
    """(mean shift, scale) of numeric column j in the current data: every 5th column drifts a
    lot, the next one a little, the rest not at all."""
    return {0: (0.5, 1.3), 1: (0.05, 1.0)}.get(j % 5, (0.0, 1.0))


def fill_numeric(out: np.ndarray, j: int, rng: np.random.Generator, current: bool) -> None:
    """Write one chunk of numeric column j (float64) into ``out``."""
    kind = NUMERIC_KINDS[j % len(NUMERIC_KINDS)]
    shift, scale = numeric_drift(j) if current else (0.0, 1.0)
    n = len(out)
    if kind in ("normal", "normal_nulls"):
        rng.standard_normal(size=n, out=out)
    elif kind == "lognormal":
        out[:] = rng.lognormal(0.0, 0.75, n)
    elif kind == "exponential":
        rng.standard_exponential(size=n, out=out)
    elif kind == "uniform":
        rng.random(size=n, out=out)
    else:
        out[:] = rng.poisson(4.0, n)  # few distinct values: ties everywhere
    if scale != 1.0:
        out *= scale
    if shift:
        out += round(shift * 4) if kind == "poisson" else shift
    if kind == "normal_nulls":
        out[rng.random(n) < 0.03] = np.nan


def category_probabilities(i: int, current: bool) -> tuple[list[str], np.ndarray]:
    """Categories of categorical column i (5 to 50 of them, Zipf-like), and their probabilities.
    In the current data every 3rd column has its two most common categories swapped and 2% of
    rows in a category the reference never saw."""
    k = 5 + (i * 13) % 46
    labels = [f"v{c:02d}" for c in range(k)]
    p = 1.0 / np.arange(1, k + 1)
    if current and i % 3 == 0:
        p[[0, 1]] = p[[1, 0]]
        p = np.append(p / p.sum() * 0.98, 0.02)
        labels.append("unseen")
    return labels, p / p.sum()


def categorical_chunk(i: int, rng: np.random.Generator, n: int, current: bool) -> np.ndarray:
    """Category codes (int8) of one chunk of categorical column i."""
    _, p = category_probabilities(i, current)
    return np.searchsorted(np.cumsum(p)[:-1], rng.random(n), side="right").astype(np.int8)


def generate(size: Size, seed: int, current: bool) -> pd.DataFrame:
    """The reference (``current=False``) or current data as one pandas frame.

    Numeric columns share one Fortran-ordered float64 block, filled a chunk at a time, which
    pandas keeps without copying; categorical columns are ``pandas.Categorical`` (int8 codes).
    Peak memory is the frame itself plus one chunk.
    """
    role = int(current)
    block = np.empty((size.rows, size.numeric), dtype=np.float64, order="F")
    for j in range(size.numeric):
        for c, start in enumerate(range(0, size.rows, CHUNK_ROWS)):
            fill_numeric(block[start:start + CHUNK_ROWS, j], j, column_rng(seed, role, j, c), current)
    frame = pd.DataFrame(block, columns=[f"num_{j:03d}" for j in range(size.numeric)], copy=False)
    for i in range(size.categorical):
        labels, _ = category_probabilities(i, current)
        codes = np.concatenate([categorical_chunk(i, column_rng(seed, role, 1000 + i, c),
                                                  min(CHUNK_ROWS, size.rows - start), current)
                                for c, start in enumerate(range(0, size.rows, CHUNK_ROWS))])
        frame[f"cat_{i:03d}"] = pd.Categorical.from_codes(codes, categories=labels)
    return frame


def write_parquet(size: Size, seed: int, path: Path) -> Path:
    """The current data as one Parquet file, generated and written a chunk at a time (the same
    values :func:`generate` gives)."""
    import pyarrow as pa
    import pyarrow.parquet as pq

    writer = None
    try:
        for c, start in enumerate(range(0, size.rows, CHUNK_ROWS)):
            n = min(CHUNK_ROWS, size.rows - start)
            data: dict[str, Any] = {}
            for j in range(size.numeric):
                out = np.empty(n)
                fill_numeric(out, j, column_rng(seed, 1, j, c), True)
                data[f"num_{j:03d}"] = out
            for i in range(size.categorical):
                labels, _ = category_probabilities(i, True)
                codes = categorical_chunk(i, column_rng(seed, 1, 1000 + i, c), n, True)
                data[f"cat_{i:03d}"] = pa.DictionaryArray.from_arrays(codes, pa.array(labels))
            table = pa.table(data)
            writer = writer or pq.ParquetWriter(path, table.schema)
            writer.write_table(table, row_group_size=CHUNK_ROWS)
    finally:
        if writer is not None:
            writer.close()
    return path
