"""Drift on Spark equals drift on pandas: the same counts, reports and profiles, on real local Spark.

The data have nulls, NaN (distinct from null in Spark), ±inf, ties, a decimal and a timestamp
column, a text categorical and an integer-coded one (with nulls) with categories the reference
never saw.
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import asdict, fields
from decimal import Decimal
from typing import Any

import numpy as np
import pandas as pd
import pyarrow as pa
import pytest

from monitoring.counting import ColumnCounts, NumericCounts, count_chunk
from monitoring.drift import compare
from monitoring.errors import DriftInputError, ProfileError
from monitoring.profile import NumericProfile, ReferenceProfile, psi_edges
from monitoring.spark_counts import _LEGACY_DISC, _lerp, _quantile_plan, arrow_frame, count_spark

pytestmark = pytest.mark.integration

CATEGORICAL = ["code"]
CHANNELS = np.array(["web", "app", "store", "phone"])


def _mask(rng: np.random.Generator, n: int, share: float) -> np.ndarray:
    return rng.random(n) < share


def _table(rng: np.random.Generator, n: int, *, shift: float, unseen: bool) -> pa.Table:
    """n rows of every kind of column; the current data (shift > 0) drift and hold unseen categories."""
    amount = np.round(rng.lognormal(3 + shift, 1, n), 1)  # rounding makes ties, also at the edges
    amount[_mask(rng, n, 0.02)] = np.nan
    amount[rng.choice(n, 5, replace=False)] = np.inf
    amount[rng.choice(n, 3, replace=False)] = -np.inf
    visits = rng.poisson(4 + 3 * shift, n)
    price = np.round(rng.normal(50 + 10 * shift, 15, n), 2)
    micros = 1_767_225_600_000_000 + rng.integers(0, 86_400_000_000 * (30 + int(20 * shift)), n)
    channel = rng.choice(CHANNELS, n, p=[0.5, 0.3, 0.15, 0.05] if not shift else [0.3, 0.3, 0.2, 0.2]).astype(object)
    code = rng.choice([5411, 5812, 4111, 7995], n, p=[0.4, 0.3, 0.2, 0.1])
    if unseen:  # distinct counts, so the most common unseen examples have one order
        rows = rng.permutation(n)
        channel[rows[:300]], channel[rows[300:400]], code[rows[400:600]], code[rows[600:650]] = \
            "tiktok", "fax", 9999, 1234
    decimals = [Decimal(f"{p:.2f}") for p in price]
    return pa.table({
        "amount": pa.array(amount, mask=_mask(rng, n, 0.03), from_pandas=False),  # NaN stays a value
        "visits": pa.array(visits, pa.int64(), mask=_mask(rng, n, 0.05)),
        "price": pa.array(decimals, pa.decimal128(12, 2), mask=_mask(rng, n, 0.01)),
        "ts": pa.array(micros, pa.timestamp("us", tz="UTC")),
        "channel": pa.array(channel, pa.string(), mask=_mask(rng, n, 0.04)),
        "code": pa.array(code, pa.int64(), mask=_mask(rng, n, 0.02)),
        "flag": pa.array(rng.random(n) < 0.3 + 0.2 * shift, pa.bool_(), mask=_mask(rng, n, 0.05)),
    })


def _pandas(table: pa.Table) -> pd.DataFrame:
    """The pandas frame of the same values: decimals as float, timestamps in nanoseconds, integer
    codes as nullable Int64 (so the code 3 is "3" as on Spark, not "3.0")."""
    frame = arrow_frame(table)
    frame["price"] = frame["price"].astype("float64")
    frame["ts"] = frame["ts"].dt.as_unit("ns")
    return frame


@pytest.fixture(scope="module")
def data(spark: Any) -> Iterator[dict[str, Any]]:
    rng = np.random.default_rng(20260101)
    reference, current = _table(rng, 10_000, shift=0.0, unseen=False), _table(rng, 8_000, shift=0.5, unseen=True)
    current = current.append_column("note", pa.array(["x"] * current.num_rows))  # an extra column
    # cached: every test reads them again, and repartition(4) would shuffle each time
    ref_sdf, cur_sdf = spark.createDataFrame(reference).cache(), spark.createDataFrame(current).repartition(4).cache()
    yield {"ref": _pandas(reference), "cur": _pandas(current), "ref_sdf": ref_sdf, "cur_sdf": cur_sdf}
    ref_sdf.unpersist()
    cur_sdf.unpersist()


def test_spark_data_hold_both_nan_and_null(data: dict[str, Any]) -> None:
    from pyspark.sql import functions as F

    row = data["cur_sdf"].agg(F.sum(F.isnan("amount").cast("int")).alias("nan"),
                              F.sum(F.col("amount").isNull().cast("int")).alias("null")).collect()[0]
    assert row["nan"] > 0 and row["null"] > 0


def test_compare_on_spark_equals_compare_on_pandas(data: dict[str, Any]) -> None:
    profile = ReferenceProfile.fit(data["ref"], categorical=CATEGORICAL, bins=10)
    on_pandas = compare(profile, data["cur"]).to_dict()
    on_spark = compare(profile, data["cur_sdf"]).to_dict()
    assert on_spark == on_pandas
    assert on_spark["extra_columns"] == ["note"]
    channel = next(c for c in on_spark["columns"] if c["column"] == "channel")
    assert channel["unseen_examples"] == ["tiktok", "fax"] and channel["unseen_share"] > 0
    assert {c["column"] for c in on_spark["columns"] if c["drifted"]} >= {"amount", "visits", "channel"}


def test_counts_do_not_depend_on_partitions_or_chunks(data: dict[str, Any]) -> None:
    profile = ReferenceProfile.fit(data["ref"], categorical=CATEGORICAL, bins=10)
    whole = _plain(count_chunk(profile, data["cur"]))
    one = _plain(count_spark(profile, data["cur_sdf"].coalesce(1)))
    many = _plain(count_spark(profile, data["cur_sdf"].repartition(5), chunk_rows=500))
    assert one == whole
    assert many == whole


def test_text_in_a_numeric_column_is_a_drift_input_error(spark: Any, data: dict[str, Any]) -> None:
    profile = ReferenceProfile.fit(data["ref"], columns=["amount", "visits"])
    current = spark.createDataFrame(pd.DataFrame({"amount": ["1.5", "abc"], "visits": [1, 2]}))
    with pytest.raises(DriftInputError, match="'amount' is numeric in the profile but holds values such as"):
        compare(profile, current)


def test_fit_on_spark_equals_fit_on_pandas(data: dict[str, Any]) -> None:
    on_spark = ReferenceProfile.fit(data["ref_sdf"], categorical=CATEGORICAL, bins=10)
    on_pandas = ReferenceProfile.fit(data["ref"], categorical=CATEGORICAL, bins=10)
    _assert_same_profile(on_spark, on_pandas)
    assert on_spark.columns["channel"].kind == on_spark.columns["flag"].kind == "categorical"
    assert on_spark.columns["code"].categories == ("4111", "5411", "5812", "7995")  # type: ignore[union-attr]
    assert not any(col.sampled for col in on_spark.columns.values() if isinstance(col, NumericProfile))
    # and the round trip through bytes compares as the pandas profile does
    assert compare(ReferenceProfile.from_bytes(on_spark.to_bytes()), data["cur"]).to_dict()["columns"] == \
        compare(on_pandas, data["cur"]).to_dict()["columns"]


@pytest.mark.parametrize("legacy", [False, True], ids=["percentile_disc", "legacy_percentile_disc"])
def test_fit_above_ks_cap_has_exact_edges_and_a_sample(spark: Any, data: dict[str, Any], legacy: bool) -> None:
    spark.conf.set(_LEGACY_DISC, str(legacy).lower())
    try:
        on_spark = ReferenceProfile.fit(data["ref_sdf"], categorical=CATEGORICAL, bins=10, ks_cap=500, seed=7,
                                        columns=["amount", "visits", "channel"])
    finally:
        spark.conf.unset(_LEGACY_DISC)
    on_pandas = ReferenceProfile.fit(data["ref"], categorical=CATEGORICAL, bins=10, ks_cap=500,
                                     columns=["amount", "visits", "channel"])
    _assert_same_profile(on_spark, on_pandas, sample=True)
    for name in ("amount", "visits"):
        col = on_spark.columns[name]
        assert isinstance(col, NumericProfile) and col.sampled and col.ks_n == 500
        assert np.isin(col.support, data["ref"][name].to_numpy(dtype=np.float64)).all()


def test_numpy_quantile_plan_is_numpy_quantile() -> None:
    rng = np.random.default_rng(3)
    for n in (1, 2, 3, 10, 11, 999):
        for bins in (2, 3, 10, 64):
            values = np.round(rng.lognormal(size=n), 1)
            values[rng.choice(n, n // 3, replace=False)] = rng.choice([np.inf, -np.inf], n // 3)
            values.sort()
            lo, hi, gamma = _quantile_plan(n, np.arange(1, bins) / bins)
            raw = _lerp(values[lo], values[hi], gamma)
            with np.errstate(invalid="ignore"):
                np.testing.assert_array_equal(np.unique(raw[~np.isnan(raw)]), psi_edges(values, bins))


def test_fit_names_a_missing_column(data: dict[str, Any]) -> None:
    with pytest.raises(ProfileError, match="'nope' is not in the reference frame"):
        ReferenceProfile.fit(data["ref_sdf"], columns=["amount", "nope"])


def _assert_same_profile(left: ReferenceProfile, right: ReferenceProfile, *, sample: bool = False) -> None:
    assert (left.rows, left.bins, left.ks_cap, list(left.columns)) == \
        (right.rows, right.bins, right.ks_cap, list(right.columns))
    for name, col in left.columns.items():
        other = right.columns[name]
        assert type(col) is type(other), name
        for f in fields(col):
            if sample and f.name in ("support", "cum_counts"):
                continue  # two different uniform samples
            a, b = getattr(col, f.name), getattr(other, f.name)
            np.testing.assert_array_equal(a, b, err_msg=f"{name}.{f.name}")
            if isinstance(a, np.ndarray):
                assert a.dtype == b.dtype, f"{name}.{f.name}"


def _plain(counts: dict[str, ColumnCounts]) -> dict[str, Any]:
    out: dict[str, Any] = {}
    for name, c in counts.items():
        record = asdict(c)
        out[name] = {k: v.tolist() if isinstance(v, np.ndarray) else dict(v) if k == "unseen" else v
                     for k, v in record.items()}
        out[name]["kind"] = "numeric" if isinstance(c, NumericCounts) else "categorical"
    return out
