"""The Spark feature jobs against brute-force pandas definitions, and backfill == incremental.

Raw data is built here with pandas/pyarrow (microsecond UTC timestamps, docs/data_model.md), small
and random but salted with the edge cases: same-microsecond ties, transactions exactly one window
apart, late arrivals (some later than the 30-day window), labels known after a snapshot, and
events, arrivals, labels and onboardings exactly at 00:00.
"""

from __future__ import annotations

import shutil
from dataclasses import dataclass
from datetime import date, timedelta
from pathlib import Path

import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from examples.fraud.feature_jobs import build_features, raw_date_range
from examples.fraud.merchant_features import merchant_stats
from features.data_checks import Bound, TableCheck, check_frame
from features.errors import DataCheckError

pytestmark = pytest.mark.integration

US = 1
HOUR = 3_600_000_000
DAY = 24 * HOUR
RAW_FIRST = pd.Timestamp("2026-01-26", tz="UTC")  # raw data covers 2026-01-26 .. 2026-03-04
START, END = date(2026, 3, 1), date(2026, 3, 3)  # the build range; needs raw from 2026-01-30 on


@dataclass
class Raw:
    transactions: pd.DataFrame
    labels: pd.DataFrame
    merchants: pd.DataFrame
    profiles: pd.DataFrame


def _us(ts: pd.Series) -> np.ndarray:
    return ts.to_numpy(dtype="datetime64[us]").astype(np.int64)


def _ts(us: np.ndarray) -> pd.Series:
    return pd.Series(pd.to_datetime(np.asarray(us, dtype=np.int64), unit="us", utc=True))


def _day_us(d: date) -> int:
    return (d - date(1970, 1, 1)).days * DAY


def _random_raw(seed: int, n: int = 400, customers: int = 5, merchants: int = 4) -> Raw:
    rng = np.random.default_rng(seed)
    first, span = _us(pd.Series([RAW_FIRST]))[0], 38 * DAY
    # Bursts make the 1h and 24h windows non-trivial, half of them close to the build range;
    # a share of the events lands exactly on 00:00.
    near = _day_us(START) - 8 * DAY + rng.integers(0, (END - START).days * DAY + 9 * DAY, n // 16)
    anchors = np.concatenate([first + rng.integers(0, span, n // 16), near])
    event = rng.choice(anchors, n) + rng.integers(0, 3 * HOUR, n)
    at_midnight = rng.random(n) < 0.08
    event[at_midnight] = (event[at_midnight] // DAY) * DAY
    late = rng.random(n) < 0.15
    delay = np.where(late, rng.integers(0, 4 * DAY, n), rng.integers(0, 90_000_000, n))
    delay[rng.random(n) < 0.02] = 31 * DAY  # arrives after its 30-day window closed
    arrival = event + delay
    snap = rng.random(n) < 0.05
    arrival[snap] = np.maximum((arrival[snap] // DAY + 1) * DAY, event[snap])  # arrives at 00:00
    tx = pd.DataFrame({
        "transaction_id": np.arange(n, dtype=np.int64),
        "customer_id": rng.integers(0, customers, n).astype(np.int64),
        "merchant_id": rng.integers(0, merchants + 1, n).astype(np.int64),  # the last one is unknown
        "amount": np.where(rng.random(n) < 0.7, np.round(rng.lognormal(3, 1, n), 2), rng.lognormal(3, 1, n)),
        "channel": rng.choice(["pos", "ecom"], n),
        "event": event, "arrival": arrival,
    })  # fmt: skip
    tx = _with_edge_pairs(tx, rng)
    return Raw(tx, _labels(tx, rng), _merchants(merchants), _profiles(customers, rng))


def _with_edge_pairs(tx: pd.DataFrame, rng: np.random.Generator) -> pd.DataFrame:
    """Exact ties, pairs exactly 1h / 1h-1us / 24h apart, and one exactly 30 days before 00:00."""
    base = tx.sample(6, random_state=int(rng.integers(1 << 30)))
    offsets = [0, 0, HOUR, HOUR - US, DAY, 7 * DAY]
    extra = base.copy()
    extra["event"] = base["event"].to_numpy() + np.array(offsets)
    extra["arrival"] = np.maximum(extra["arrival"].to_numpy(), extra["event"].to_numpy())
    boundary = tx.iloc[[0]].copy()
    boundary["event"] = _day_us(START) - 30 * DAY + DAY  # at 00:00, exactly 30 days before START + 1
    boundary["arrival"] = boundary["event"]
    out = pd.concat([tx, extra, boundary], ignore_index=True)
    out["transaction_id"] = np.arange(len(out), dtype=np.int64)
    return out


def _labels(tx: pd.DataFrame, rng: np.random.Generator) -> pd.DataFrame:
    n = len(tx)
    fraud = (rng.random(n) < 0.25).astype(np.int8)
    label = np.where(fraud == 1, tx["event"] + rng.integers(0, 6 * DAY, n), tx["event"] + 30 * DAY)
    exact = rng.random(n) < 0.1
    label[exact] = np.maximum((label[exact] // DAY) * DAY, tx["event"].to_numpy()[exact])  # at 00:00
    return pd.DataFrame({"transaction_id": tx["transaction_id"], "is_fraud": fraud,
                         "transaction_us": tx["event"], "label": label})  # fmt: skip


def _merchants(count: int) -> pd.DataFrame:
    onboarded = [RAW_FIRST - pd.Timedelta(days=400), pd.Timestamp("2026-03-02 13:05", tz="UTC"),
                 pd.Timestamp("2026-03-02", tz="UTC"), pd.Timestamp("2026-03-09", tz="UTC")]  # fmt: skip
    return pd.DataFrame({
        "merchant_id": np.arange(count, dtype=np.int64),
        "category": [f"cat{i}" for i in range(count)],
        "country": ["DE", "FR", "MT", "IT"][:count],
        "onboarded_at": _us(pd.Series(onboarded[:count])),
    })  # fmt: skip


def _profiles(customers: int, rng: np.random.Generator) -> pd.DataFrame:
    valid = _us(pd.Series([RAW_FIRST])) + rng.integers(0, 38 * DAY, 3 * customers)
    valid[:2] = [_day_us(START), _day_us(END + timedelta(days=1)) - US]  # range edges
    return pd.DataFrame({
        "customer_id": np.tile(np.arange(customers, dtype=np.int64), 3),
        "income": np.round(rng.uniform(20_000, 90_000, 3 * customers), 2),
        "age_band": rng.choice(["18-24", "35-44", "65+"], 3 * customers),
        "home_country": rng.choice(["DE", "FR"], 3 * customers),
        "valid_from": valid, "recorded_at": valid + rng.integers(0, 2 * DAY, 3 * customers),
    })  # fmt: skip


# ---------------------------------------------------------------------------- raw as Parquet


def _arrow(df: pd.DataFrame, renames: dict[str, str]) -> pd.DataFrame:
    out = df.rename(columns=renames)
    for col in renames.values():
        out[col] = _ts(out[col].to_numpy())
    return out


def _write(df: pd.DataFrame, root: Path, by: str | None) -> None:
    if by is None:
        root.mkdir(parents=True)
        pq.write_table(pa.Table.from_pandas(df, preserve_index=False), root / "part-0.parquet", coerce_timestamps="us")
        return
    df = df.assign(date=df[by].dt.strftime("%Y-%m-%d"))
    pq.write_to_dataset(pa.Table.from_pandas(df, preserve_index=False), root, partition_cols=["date"],
                        coerce_timestamps="us")  # fmt: skip


def _write_raw(raw: Raw, root: Path) -> None:
    tx = _arrow(raw.transactions, {"event": "event_timestamp", "arrival": "arrival_timestamp"})
    _write(tx, root / "transactions", "event_timestamp")
    labels = _arrow(raw.labels, {"transaction_us": "transaction_timestamp", "label": "label_timestamp"})
    _write(labels, root / "labels", "label_timestamp")
    _write(_arrow(raw.merchants, {"onboarded_at": "onboarded_at"}), root / "merchants", None)
    profiles = _arrow(raw.profiles, {"valid_from": "valid_from", "recorded_at": "recorded_at"})
    _write(profiles, root / "customer_profiles", "valid_from")


POISONED = [("transactions", "2026-01-29"), ("labels", "2026-01-29"), ("transactions", "2026-03-04"),
            ("labels", "2026-03-04"), ("customer_profiles", "2026-02-28"), ("customer_profiles", "2026-03-04")]  # fmt: skip


def _poison_unneeded_partitions(root: Path) -> None:
    """Put unreadable files in raw partitions a [START, END] build must not open."""
    for table, day in POISONED:
        part = root / table / f"date={day}"
        part.mkdir(parents=True, exist_ok=True)
        (part / "zz-poison.parquet").write_bytes(b"not parquet")


# ---------------------------------------------------------------------------- brute force


def _micros(amount: pd.Series) -> np.ndarray:
    return np.rint(amount.to_numpy() * 1e6).astype(np.int64)


def brute_merchant_stats(raw: Raw, start: date, end: date) -> pd.DataFrame:
    tx = raw.transactions.merge(raw.labels[["transaction_id", "is_fraud", "label"]], on="transaction_id")
    tx = tx.assign(amt_us=_micros(tx["amount"]))
    rows = []
    for _, m in raw.merchants.iterrows():
        mine = tx[tx["merchant_id"] == m["merchant_id"]]
        for s in range(_day_us(start), _day_us(end) + 1, DAY):
            if s < m["onboarded_at"]:
                continue
            w = mine[(mine["event"] > s - 30 * DAY) & (mine["event"] <= s) & (mine["arrival"] <= s)]
            n, frauds = len(w), int(((w["is_fraud"] == 1) & (w["label"] <= s)).sum())
            rows.append({
                "merchant_id": m["merchant_id"], "event_timestamp": s, "created_timestamp": s,
                "category": m["category"], "country": m["country"], "txn_count_30d": n,
                "amt_mean_30d": float(w["amt_us"].sum()) / float(n * 1_000_000) if n else np.nan,
                "fraud_rate_30d": frauds / n if n else 0.0,
            })  # fmt: skip
    return _finish(pd.DataFrame(rows), ["event_timestamp", "created_timestamp"])


def brute_customer_profile(raw: Raw, start: date, end: date) -> pd.DataFrame:
    p = raw.profiles
    p = p[(p["valid_from"] >= _day_us(start)) & (p["valid_from"] < _day_us(end) + DAY)]
    out = p.rename(columns={"valid_from": "event_timestamp", "recorded_at": "created_timestamp"})
    return _finish(out, ["event_timestamp", "created_timestamp"])


def _finish(df: pd.DataFrame, ts_columns: list[str]) -> pd.DataFrame:
    df = df.copy()
    for col in ts_columns:
        df[col] = _ts(df[col].to_numpy()).to_numpy()
    df["date"] = pd.Series(df["event_timestamp"]).dt.strftime("%Y-%m-%d").to_numpy()
    return _canonical(df)


def _canonical(df: pd.DataFrame) -> pd.DataFrame:
    """Sorted rows, sorted columns, plain dtypes: frames compare with ``assert_frame_equal``."""
    df = df.copy()
    for col in df.columns:
        if isinstance(df[col].dtype, pd.CategoricalDtype) or df[col].dtype == object:
            df[col] = df[col].astype(str)
        elif pd.api.types.is_integer_dtype(df[col]):
            df[col] = df[col].astype(np.int64)
        elif pd.api.types.is_datetime64_any_dtype(df[col]):
            df[col] = pd.to_datetime(df[col], utc=True).astype("datetime64[us, UTC]")
    df = df[sorted(df.columns)]
    return df.sort_values(list(df.columns)).reset_index(drop=True)


def _read_table(path: Path) -> pd.DataFrame:
    return _canonical(pd.read_parquet(path))


TABLES = ("customer_profile", "merchant_stats")  # the customer windows are stream views: no table


# ---------------------------------------------------------------------------- tests


@pytest.fixture(scope="module")
def raw() -> Raw:
    return _random_raw(seed=7)


@pytest.fixture(scope="module")
def raw_dir(raw, tmp_path_factory) -> Path:
    root = tmp_path_factory.mktemp("raw")
    _write_raw(raw, root)
    _poison_unneeded_partitions(root)
    return root


@pytest.fixture(scope="module")
def backfill(spark, raw_dir, tmp_path_factory) -> tuple[Path, object]:
    offline = tmp_path_factory.mktemp("backfill")
    return offline, build_features(spark, raw_dir, offline, start=START, end=END)


def test_backfill_matches_brute_force(raw, backfill):
    offline, summary = backfill
    expected = {
        "customer_profile": brute_customer_profile(raw, START, END),
        "merchant_stats": brute_merchant_stats(raw, START, END),
    }
    for table in TABLES:
        pd.testing.assert_frame_equal(_read_table(offline / table), expected[table], check_exact=True, obj=table)
        assert summary.tables[table] == len(expected[table])
    assert summary.partitions == {t: expected[t]["date"].nunique() for t in TABLES}
    assert (summary.start, summary.end) == (START, END)
    row = ["merchant_stats", f"{len(expected['merchant_stats']):,}", str(summary.partitions["merchant_stats"])]
    assert row in [line.split() for line in summary.table().splitlines()]
    assert sorted(p.name for p in offline.iterdir()) == sorted(TABLES)
    assert (expected["merchant_stats"]["fraud_rate_30d"] > 0).any()


def test_output_schema(backfill):
    offline, _ = backfill
    (part,) = (offline / "customer_profile" / f"date={START}").glob("*.parquet")
    schema = pq.read_schema(part)
    assert str(schema.field("event_timestamp").type) == "timestamp[us, tz=UTC]"
    assert str(schema.field("created_timestamp").type) == "timestamp[us, tz=UTC]"
    (part,) = (offline / "merchant_stats" / f"date={END}").glob("*.parquet")
    assert {f.name: str(f.type) for f in pq.read_schema(part)} == {
        "merchant_id": "int64", "event_timestamp": "timestamp[us, tz=UTC]",
        "created_timestamp": "timestamp[us, tz=UTC]", "category": "string", "country": "string",
        "txn_count_30d": "int64", "amt_mean_30d": "double", "fraud_rate_30d": "double",
    }  # fmt: skip


def test_day_by_day_runs_equal_the_backfill(spark, raw_dir, backfill, tmp_path):
    offline, _ = backfill
    days = [START + timedelta(days=i) for i in range((END - START).days + 1)]
    for day in reversed(days):  # the order of the runs must not matter either
        summary = build_features(spark, raw_dir, tmp_path, start=day, end=day)
        assert (summary.start, summary.end) == (day, day)
    for table in TABLES:
        pd.testing.assert_frame_equal(_read_table(tmp_path / table), _read_table(offline / table), check_exact=True)


def test_merchant_stats_matches_brute_force_on_other_data(spark):
    raw = _random_raw(seed=11, n=300, merchants=3)
    start, end = date(2026, 2, 20), date(2026, 3, 3)
    frames = {
        "transactions": _arrow(raw.transactions, {"event": "event_timestamp", "arrival": "arrival_timestamp"}),
        "labels": _arrow(raw.labels, {"transaction_us": "transaction_timestamp", "label": "label_timestamp"}),
        "merchants": _arrow(raw.merchants, {"onboarded_at": "onboarded_at"}),
    }
    tx, labels, merchants = (spark.createDataFrame(frames[k]) for k in ("transactions", "labels", "merchants"))
    got = merchant_stats(tx, labels, merchants, start, end).toPandas()
    pd.testing.assert_frame_equal(_canonical(got), brute_merchant_stats(raw, start, end), check_exact=True)


def test_default_range_is_the_raw_data_range(raw, raw_dir):
    days = pd.concat([_ts(raw.transactions["event"].to_numpy()), _ts(raw.profiles["valid_from"].to_numpy())]).dt.date
    poisoned = [date.fromisoformat(d) for _, d in POISONED]
    assert raw_date_range(raw_dir) == (min([*days, *poisoned]), max([*days, *poisoned]))


# ---------------------------------------------------------------------------- data checks


def test_a_checked_build_writes_what_the_plain_one_does(spark, raw_dir, backfill, tmp_path):
    offline, _ = backfill
    summary = build_features(spark, raw_dir, tmp_path, start=START, end=END, checks=True)
    assert summary.tables == backfill[1].tables
    for table in TABLES:
        pd.testing.assert_frame_equal(_read_table(tmp_path / table), _read_table(offline / table), check_exact=True)


def test_a_failed_check_names_every_failure_and_publishes_nothing(spark, raw, backfill, tmp_path):
    """A negative amount and a payment without a customer in the interval: the build stops before
    it writes any table, and the tables of an earlier build keep their rows."""
    bad = raw.transactions.copy()
    in_range = bad.index[(bad["event"] >= _day_us(START)) & (bad["event"] < _day_us(END))]
    bad.loc[in_range[:3], "amount"] = -5.0
    bad["customer_id"] = bad["customer_id"].astype("float64")
    bad.loc[in_range[3:5], "customer_id"] = np.nan
    root = tmp_path / "raw"
    _write_raw(Raw(bad, raw.labels, raw.merchants, raw.profiles), root)
    offline = tmp_path / "offline"
    shutil.copytree(backfill[0], offline)  # an earlier build's tables (a copy: the module shares them)
    before = {t: _read_table(offline / t) for t in TABLES}
    with pytest.raises(DataCheckError) as caught:
        build_features(spark, root, offline, start=START, end=END, checks=True)
    failures = caught.value.failures
    assert "raw transactions: 3 of" in " ".join(failures) and "break 0 < amount" in " ".join(failures)
    assert any("have no customer_id" in f for f in failures), failures
    assert "nothing was published" in str(caught.value)
    for table in TABLES:
        pd.testing.assert_frame_equal(_read_table(offline / table), before[table], check_exact=True)


def test_check_frame_reports_schema_nulls_ranges_and_the_interval(spark):
    from datetime import UTC, datetime

    at = [datetime(2026, 2, 1, tzinfo=UTC), datetime(2026, 2, 2, tzinfo=UTC), datetime(2026, 3, 9, tzinfo=UTC)]
    frame = spark.createDataFrame(list(zip([1.0, 2.0, None], at, [0.1, 1.5, float("nan")], strict=True)),
                                  "merchant_id double, event_timestamp timestamp, fraud_rate_30d double")
    check = TableCheck("t", {"merchant_id": "double", "event_timestamp": "timestamp",
                             "fraud_rate_30d": "double"}, ("merchant_id",), (Bound("fraud_rate_30d", low=0, high=1),))
    result = check_frame(frame, check, start=date(2026, 2, 1), end=date(2026, 2, 28))
    assert result.rows == 3 and result.failures == [
        "t: 1 of 3 rows have no merchant_id", "t: 2 of 3 rows break 0 <= fraud_rate_30d and fraud_rate_30d <= 1",
        "t: 1 of 3 rows have event_timestamp outside 2026-02-01 .. 2026-02-28 (UTC)"]
    wrong = TableCheck("t", {"merchant_id": "bigint", "absent": "string"}, ())
    assert check_frame(frame, wrong, start=date(2026, 2, 1), end=date(2026, 2, 28)).failures == [
        "t: column 'merchant_id' is double, expected bigint", "t: column 'absent' is missing"]
