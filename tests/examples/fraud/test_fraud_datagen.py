"""Tests of the synthetic card-fraud generator (examples.fraud.datagen): schema, invariants,
realism, determinism, scenario drift and safe replacement of the output folder."""

from __future__ import annotations

import dataclasses
import datetime as dt
import json
import os
import re
from pathlib import Path

import pandas as pd
import pyarrow as pa
import pyarrow.dataset as ds
import pyarrow.parquet as pq
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from scipy import stats

from examples.fraud.datagen import DatagenConfig, DatagenError, DatagenSummary, Scenario, data_window, generate
from examples.fraud.datagen.tables import build_tables

TS = pa.timestamp("us", tz="UTC")
SCHEMAS = {
    "customer_profiles": pa.schema(
        [
            ("customer_id", pa.int64()),
            ("income", pa.float64()),
            ("age_band", pa.string()),
            ("home_country", pa.string()),
            ("valid_from", TS),
            ("recorded_at", TS),
        ]
    ),
    "merchants": pa.schema(
        [
            ("merchant_id", pa.int64()),
            ("category", pa.string()),
            ("country", pa.string()),
            ("onboarded_at", TS),
        ]
    ),
    "transactions": pa.schema(
        [
            ("transaction_id", pa.int64()),
            ("customer_id", pa.int64()),
            ("merchant_id", pa.int64()),
            ("amount", pa.float64()),
            ("channel", pa.string()),
            ("event_timestamp", TS),
            ("arrival_timestamp", TS),
        ]
    ),
    "labels": pa.schema(
        [
            ("transaction_id", pa.int64()),
            ("is_fraud", pa.int8()),
            ("transaction_timestamp", TS),
            ("label_timestamp", TS),
        ]
    ),
}
PARTITIONED_BY = {
    "customer_profiles": "valid_from",
    "transactions": "event_timestamp",
    "labels": "label_timestamp",
}
CONFIG = DatagenConfig(rows=40_000, seed=3, start=dt.date(2026, 1, 1), days=60)
DRIFT = pd.Timestamp(CONFIG.drift_date, tz="UTC")
RISKY = {"electronics", "jewelry", "online_gaming"}


def read(root: Path, table: str) -> pd.DataFrame:
    """A raw table as pandas, the hive partition column ``date`` read as a string."""
    part = ds.partitioning(pa.schema([("date", pa.string())]), flavor="hive")
    data = ds.dataset(root / table, format="parquet", partitioning=part).to_table()
    return data.to_pandas()


@dataclasses.dataclass
class Raw:
    """One generated raw folder, read back."""

    root: Path
    summary: DatagenSummary
    profiles: pd.DataFrame
    merchants: pd.DataFrame
    txn: pd.DataFrame
    labels: pd.DataFrame

    @property
    def joined(self) -> pd.DataFrame:
        """Transactions with their label, merchant and the customer's home country."""
        home = self.profiles.sort_values("valid_from").groupby("customer_id").home_country.first()
        df = self.txn.merge(self.labels[["transaction_id", "is_fraud"]], on="transaction_id")
        df = df.merge(self.merchants, on="merchant_id")
        df["foreign"] = df.country.to_numpy() != home.loc[df.customer_id].to_numpy()
        df["post"] = df.event_timestamp >= DRIFT
        return df


def make_raw(root: Path, config: DatagenConfig) -> Raw:
    summary = generate(root, config)
    return Raw(
        root=root,
        summary=summary,
        profiles=read(root, "customer_profiles"),
        merchants=pd.read_parquet(root / "merchants"),
        txn=read(root, "transactions"),
        labels=read(root, "labels"),
    )


@pytest.fixture(scope="module")
def worlds(tmp_path_factory: pytest.TempPathFactory) -> dict[Scenario, Raw]:
    base = tmp_path_factory.mktemp("worlds")
    return {
        s: make_raw(base / s.value / "raw", dataclasses.replace(CONFIG, scenario=s))
        for s in Scenario
    }


@pytest.fixture(scope="module")
def raw(worlds: dict[Scenario, Raw]) -> Raw:
    return worlds[Scenario.BASELINE]


# --- schema -------------------------------------------------------------------------------


@pytest.mark.parametrize("table", sorted(SCHEMAS))
def test_every_file_has_the_documented_schema_with_microsecond_utc_timestamps(
    raw: Raw, table: str
) -> None:
    files = sorted((raw.root / table).rglob("*.parquet"))
    assert files
    for path in files:
        parquet = pq.ParquetFile(path)
        assert parquet.schema_arrow.remove_metadata() == SCHEMAS[table], path
        for i, field in enumerate(parquet.schema_arrow):
            if field.type == TS:
                logical = parquet.schema.column(i).logical_type.to_json()
                assert '"timeUnit": "microseconds"' in logical
                assert '"isAdjustedToUTC": true' in logical


@pytest.mark.parametrize("table", sorted(PARTITIONED_BY))
def test_partitions_are_the_utc_date_of_their_timestamp(raw: Raw, table: str) -> None:
    folders = [p.name for p in (raw.root / table).iterdir()]
    assert all(re.fullmatch(r"date=\d{4}-\d{2}-\d{2}", f) for f in folders), folders
    df = getattr(raw, {"customer_profiles": "profiles", "transactions": "txn"}.get(table, table))
    day = df[PARTITIONED_BY[table]].dt.strftime("%Y-%m-%d")
    assert (day == df["date"].astype(str)).all()


def test_merchants_are_one_unpartitioned_file_and_the_manifest_records_the_arguments(
    raw: Raw,
) -> None:
    assert [p.name for p in (raw.root / "merchants").iterdir()] == ["part-00000.parquet"]
    manifest = json.loads((raw.root / "_manifest.json").read_text())
    assert {
        k: manifest[k] for k in ("rows", "seed", "scenario", "start", "days", "drift_start")
    } == {
        "rows": 40_000,
        "seed": 3,
        "scenario": "baseline",
        "start": "2026-01-01",
        "days": 60,
        "drift_start": "2026-02-15",
    }
    assert manifest["transactions_rows"] == 40_000


# --- invariants ---------------------------------------------------------------------------


def test_transactions_are_complete_and_well_formed(raw: Raw) -> None:
    txn = raw.txn
    assert len(txn) == 40_000 and txn.transaction_id.is_unique
    assert (txn.amount > 0).all()
    assert set(txn.channel) == {"pos", "ecom"}
    assert set(txn.customer_id) <= set(raw.profiles.customer_id)
    assert set(txn.merchant_id) <= set(raw.merchants.merchant_id)
    start = pd.Timestamp(CONFIG.start, tz="UTC")
    assert txn.event_timestamp.min() >= start
    assert txn.event_timestamp.max() < start + pd.Timedelta(days=CONFIG.days)


def test_arrival_is_after_the_event_and_about_three_percent_arrive_late(raw: Raw) -> None:
    delay = raw.txn.arrival_timestamp - raw.txn.event_timestamp
    # at least the authorisation round trip: a payment is scored before it is recorded, so a
    # training row at its own time does not see it in its windows, as serving does not
    assert delay.min() >= pd.Timedelta(milliseconds=50)
    late = delay > pd.Timedelta(seconds=60)
    assert 0.025 <= late.mean() <= 0.035
    assert delay.max() <= pd.Timedelta(hours=48)
    assert delay[~late].median() < pd.Timedelta(seconds=10)
    assert delay[late].median() < pd.Timedelta(hours=2)  # heavy tail: most late ones are minutes
    assert raw.summary.late_share == pytest.approx(late.mean())


def test_every_transaction_has_exactly_one_label_known_after_it(raw: Raw) -> None:
    labels = raw.labels
    assert labels.transaction_id.is_unique
    assert set(labels.transaction_id) == set(raw.txn.transaction_id)
    both = raw.txn.merge(labels, on="transaction_id")
    assert (both.transaction_timestamp == both.event_timestamp).all()
    delay = both.label_timestamp - both.transaction_timestamp
    assert (delay > pd.Timedelta(0)).all()
    assert (delay[both.is_fraud == 0] == pd.Timedelta(days=30)).all()
    chargeback = delay[both.is_fraud == 1]
    assert chargeback.min() >= pd.Timedelta(days=1) and chargeback.max() <= pd.Timedelta(days=30)
    assert pd.Timedelta(days=4) <= chargeback.median() <= pd.Timedelta(days=10)
    assert set(labels.is_fraud) == {0, 1}
    assert labels.label_timestamp.max() > pd.Timestamp(CONFIG.start, tz="UTC") + pd.Timedelta(
        days=CONFIG.days
    )


def test_profiles_have_a_first_version_before_the_window_and_some_later_updates(raw: Raw) -> None:
    p = raw.profiles
    start = pd.Timestamp(CONFIG.start, tz="UTC")
    first = p.sort_values("valid_from").groupby("customer_id").first()
    assert len(first) == CONFIG.n_customers == raw.summary.customers
    assert (first.valid_from < start).all()
    assert (p.recorded_at >= p.valid_from).all()
    later = p[p.valid_from >= start]
    assert later.customer_id.is_unique
    assert 0.07 <= len(later) / len(first) <= 0.13
    assert (later.recorded_at - later.valid_from).max() <= pd.Timedelta(days=5)
    assert set(p.age_band) == {"18-24", "25-34", "35-44", "45-54", "55-64", "65+"}
    assert p.groupby("customer_id")[["age_band", "home_country"]].nunique().max().max() == 1
    assert p.home_country.value_counts(normalize=True).iloc[0] < 0.3
    assert p.income.min() > 0
    median = p.groupby("age_band").income.median()
    assert median["45-54"] > 1.5 * median["18-24"]


def test_merchants_cover_every_category_mostly_in_customer_countries(raw: Raw) -> None:
    m = raw.merchants
    assert len(m) == CONFIG.n_merchants and m.merchant_id.is_unique
    assert m.category.nunique() == 15 and "crypto_exchange" not in set(m.category)
    assert m.country.isin(set(raw.profiles.home_country)).mean() > 0.8
    assert (m.onboarded_at < pd.Timestamp(CONFIG.start, tz="UTC")).all()


@settings(max_examples=15, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(
    rows=st.integers(1, 3_000),
    days=st.integers(2, 20),
    seed=st.integers(0, 2**32),
    scenario=st.sampled_from(list(Scenario)),
)
def test_invariants_hold_for_any_small_config(
    rows: int, days: int, seed: int, scenario: Scenario
) -> None:
    tables = build_tables(DatagenConfig(rows=rows, seed=seed, scenario=scenario, days=days))
    txn, labels = tables.transactions.to_pandas(), tables.labels.to_pandas()
    assert len(txn) == len(labels) == rows and txn.transaction_id.is_unique
    assert (txn.arrival_timestamp >= txn.event_timestamp).all() and (txn.amount > 0).all()
    assert (labels.label_timestamp > labels.transaction_timestamp).all()
    assert set(labels.transaction_id) == set(txn.transaction_id)


# --- realism ------------------------------------------------------------------------------


def test_fraud_rate_is_in_a_sane_band(raw: Raw) -> None:
    assert 0.004 <= raw.labels.is_fraud.mean() <= 0.012
    assert raw.summary.fraud_rate == pytest.approx(raw.labels.is_fraud.mean())


def test_fraud_is_learnable_from_amount_country_category_channel_and_time(raw: Raw) -> None:
    df = raw.joined
    fraud, legit = df[df.is_fraud == 1], df[df.is_fraud == 0]
    assert fraud.amount.median() > 3 * legit.amount.median()
    assert fraud.foreign.mean() > 2.5 * legit.foreign.mean()
    assert fraud.category.isin(RISKY).mean() > 4 * legit.category.isin(RISKY).mean()
    assert (fraud.channel == "ecom").mean() > (legit.channel == "ecom").mean() + 0.2
    night = df.event_timestamp.dt.hour < 6
    assert df[night].is_fraud.mean() > 2 * df[~night].is_fraud.mean()


def test_compromised_cards_show_bursts_of_fraud_within_an_hour(raw: Raw) -> None:
    fraud = raw.joined.query("is_fraud == 1").sort_values(["customer_id", "event_timestamp"])
    gap = fraud.groupby("customer_id").event_timestamp.diff()
    in_burst = gap <= pd.Timedelta(hours=1)
    assert in_burst.sum() > 0.25 * len(fraud)


def test_activity_is_higher_by_day_than_by_night_and_varies_by_customer(raw: Raw) -> None:
    hours = raw.txn.event_timestamp.dt.hour.value_counts().sort_index()
    assert hours.loc[10:19].mean() > 5 * hours.loc[1:4].mean()
    per_customer = raw.txn.customer_id.value_counts()
    assert per_customer.quantile(0.9) > 3 * per_customer.quantile(0.25)


def test_the_baseline_is_stationary(raw: Raw) -> None:
    df = raw.joined
    first, last = df[df.event_timestamp < df.event_timestamp.median()], df[df.post]
    assert last.amount.median() == pytest.approx(first.amount.median(), rel=0.05)
    share = pd.concat(
        [first.category.value_counts(normalize=True), last.category.value_counts(normalize=True)],
        axis=1,
    ).fillna(0)
    assert share.diff(axis=1).abs().iloc[:, 1].sum() / 2 < 0.03
    assert 0.003 < last.is_fraud.mean() < 0.015 and 0.003 < first.is_fraud.mean() < 0.015


# --- determinism and scenarios ------------------------------------------------------------


def _sorted(df: pd.DataFrame, key: list[str]) -> pd.DataFrame:
    return df.sort_values(key).reset_index(drop=True)


KEYS = {
    "profiles": ["customer_id", "valid_from"],
    "merchants": ["merchant_id"],
    "txn": ["transaction_id"],
    "labels": ["transaction_id"],
}


def test_the_same_config_gives_the_same_data(raw: Raw, tmp_path: Path) -> None:
    again = make_raw(tmp_path / "raw", CONFIG)
    for name, key in KEYS.items():
        pd.testing.assert_frame_equal(
            _sorted(getattr(again, name), key), _sorted(getattr(raw, name), key)
        )
    assert (again.root / "_manifest.json").read_text() == (raw.root / "_manifest.json").read_text()
    other = build_tables(dataclasses.replace(CONFIG, seed=4)).transactions
    assert other["amount"].to_pylist()[:100] != raw.txn.amount.tolist()[:100]


@pytest.mark.parametrize(
    "scenario", [Scenario.COVARIATE_SHIFT, Scenario.NEW_CATEGORY, Scenario.CONCEPT_DRIFT]
)
def test_events_before_the_drift_start_equal_the_baselines(
    worlds: dict[Scenario, Raw], scenario: Scenario
) -> None:
    base, world = worlds[Scenario.BASELINE], worlds[scenario]
    pre = world.txn[world.txn.event_timestamp < DRIFT]
    base_pre = base.txn[base.txn.event_timestamp < DRIFT]
    assert len(pre) > 0.6 * len(world.txn)
    pd.testing.assert_frame_equal(_sorted(pre, KEYS["txn"]), _sorted(base_pre, KEYS["txn"]))
    labels = world.labels[world.labels.transaction_timestamp < DRIFT]
    base_labels = base.labels[base.labels.transaction_timestamp < DRIFT]
    cols = ["transaction_id", "is_fraud", "transaction_timestamp", "label_timestamp"]
    pd.testing.assert_frame_equal(
        _sorted(labels[cols], KEYS["labels"]), _sorted(base_labels[cols], KEYS["labels"])
    )
    profiles = world.profiles[world.profiles.valid_from < DRIFT]
    base_profiles = base.profiles[base.profiles.valid_from < DRIFT]
    pd.testing.assert_frame_equal(
        _sorted(profiles, KEYS["profiles"]), _sorted(base_profiles, KEYS["profiles"])
    )
    pd.testing.assert_frame_equal(world.merchants.iloc[: len(base.merchants)], base.merchants)


def test_covariate_shift_raises_amounts_and_incomes_after_the_drift_start(
    worlds: dict[Scenario, Raw],
) -> None:
    base, shifted = worlds[Scenario.BASELINE].joined, worlds[Scenario.COVARIATE_SHIFT].joined
    ratio = shifted[shifted.post].amount.median() / base[base.post].amount.median()
    assert 1.45 <= ratio <= 1.75
    p = worlds[Scenario.COVARIATE_SHIFT].profiles.sort_values(["customer_id", "valid_from"])
    p["previous"] = p.groupby("customer_id").income.shift()
    moved = p[(p.valid_from >= DRIFT) & (p.valid_from < DRIFT + pd.Timedelta(days=3))]
    assert moved.customer_id.nunique() > 0.5 * p.customer_id.nunique()
    assert 1.25 <= (moved.income / moved.previous).median() <= 1.45
    assert shifted.is_fraud.mean() == pytest.approx(base.is_fraud.mean(), abs=0.002)


def test_new_category_takes_a_sizeable_share_only_after_the_drift_start(
    worlds: dict[Scenario, Raw],
) -> None:
    world = worlds[Scenario.NEW_CATEGORY]
    df = world.joined
    crypto = df.category == "crypto_exchange"
    assert not crypto[~df.post].any()
    assert 0.08 <= crypto[df.post].mean() <= 0.25
    new = world.merchants[world.merchants.category == "crypto_exchange"]
    assert len(new) >= 5 and (new.onboarded_at < DRIFT).all()
    assert (df[crypto].channel == "ecom").mean() > 0.9
    assert "crypto_exchange" not in set(worlds[Scenario.BASELINE].merchants.category)


def test_concept_drift_changes_who_commits_fraud_but_not_what_payments_look_like(
    worlds: dict[Scenario, Raw],
) -> None:
    base, drift = worlds[Scenario.BASELINE].joined, worlds[Scenario.CONCEPT_DRIFT].joined
    b, d = base[base.post], drift[drift.post]
    assert stats.ks_2samp(b.amount, d.amount).statistic < 0.02
    mix = pd.concat(
        [b.category.value_counts(normalize=True), d.category.value_counts(normalize=True)], axis=1
    ).fillna(0)
    assert (mix.iloc[:, 0] - mix.iloc[:, 1]).abs().sum() / 2 < 0.01
    assert (b.channel == "ecom").mean() == pytest.approx((d.channel == "ecom").mean(), abs=0.01)
    assert b.foreign.mean() == pytest.approx(d.foreign.mean(), abs=0.01)
    card_testing = {"grocery", "pharmacy"}
    b_fraud, d_fraud = b[b.is_fraud == 1], d[d.is_fraud == 1]
    assert d_fraud.category.isin(card_testing).mean() > 0.6
    assert b_fraud.category.isin(card_testing).mean() < 0.2
    assert d_fraud.amount.median() < b[b.is_fraud == 0].amount.median()
    assert b_fraud.amount.median() > 3 * b[b.is_fraud == 0].amount.median()
    assert d_fraud.foreign.mean() < 0.5 * b_fraud.foreign.mean()
    assert 0.003 < d.is_fraud.mean() < 0.015


# --- configuration and output folder -----------------------------------------------------


@pytest.mark.parametrize(
    ("kwargs", "hint"),
    [
        ({"rows": 0}, "rows must be an integer >= 1"),
        ({"rows": -5}, "--rows"),
        ({"days": 0}, "days must be an integer >= 1"),
        ({"seed": -1}, "seed"),
        ({"scenario": "sudden_doom"}, "choose one of: baseline, covariate_shift"),
        ({"drift_start": dt.date(2025, 12, 1)}, "outside the data window"),
        ({"drift_start": dt.date(2026, 1, 1)}, "outside the data window"),
        ({"drift_start": dt.date(2026, 5, 1)}, "pick a day from 2026-01-02 to 2026-04-30"),
        ({"scenario": "concept_drift", "days": 1}, "needs days >= 2"),
        ({"customers": 0}, "customers"),
        ({"merchants": 3}, "one per category"),
    ],
)
def test_bad_config_is_refused_with_a_hint(kwargs: dict[str, object], hint: str) -> None:
    with pytest.raises(DatagenError, match=re.escape(hint)) as info:
        DatagenConfig(**kwargs)  # type: ignore[arg-type]
    assert isinstance(info.value, ValueError)


def test_scenario_may_be_given_by_name_and_defaults_follow_rows() -> None:
    config = DatagenConfig(rows=100_000, scenario="new_category")  # type: ignore[arg-type]
    assert config.scenario is Scenario.NEW_CATEGORY
    assert (config.n_customers, config.n_merchants) == (2_500, 250)
    assert config.drift_date == dt.date(2026, 1, 1) + dt.timedelta(days=90)


def test_regenerating_replaces_the_previous_data_completely(tmp_path: Path) -> None:
    out = tmp_path / "home" / "raw"
    generate(out, DatagenConfig(rows=3_000, days=10, customers=50))
    (out / "transactions" / "date=2026-01-09" / "stray.parquet").write_bytes(b"old")
    summary = generate(out, DatagenConfig(rows=2_000, days=5, customers=40, seed=9))
    days = sorted(p.name for p in (out / "transactions").iterdir())
    assert days == [f"date=2026-01-0{d}" for d in range(1, 6)]
    assert len(read(out, "transactions")) == 2_000 == summary.transactions
    assert json.loads((out / "_manifest.json").read_text())["seed"] == 9
    assert [p.name for p in out.parent.iterdir()] == ["raw"]  # no staging or retired folders


def test_a_foreign_folder_is_never_replaced(tmp_path: Path) -> None:
    out = tmp_path / "raw"
    out.mkdir()
    (out / "precious.csv").write_text("keep me")
    with pytest.raises(DatagenError, match="no _manifest.json"):
        generate(out, DatagenConfig(rows=100, days=2))
    assert (out / "precious.csv").read_text() == "keep me"
    assert [p.name for p in tmp_path.iterdir()] == ["raw"]


def test_tiny_configs_work_and_the_summary_table_reads_well(tmp_path: Path) -> None:
    summary = generate(tmp_path / "raw", DatagenConfig(rows=1, days=1))
    assert (summary.transactions, summary.labels, summary.customers) == (1, 1, 1)
    text = summary.table()
    assert "transactions" in text and "fraud rate" in text and str(tmp_path / "raw") in text


# -- the window `tidemark datagen` generates (issue 15: the README's flow served nothing after April) --


TODAY = dt.date(2026, 12, 6)


@pytest.mark.parametrize(("start", "end", "days", "expected"), [
    (None, None, None, (dt.date(2026, 8, 9), 120)),          # the default: 120 days up to today
    (None, None, 10, (dt.date(2026, 11, 27), 10)),
    (None, dt.date(2026, 3, 31), 31, (dt.date(2026, 3, 1), 31)),
    (dt.date(2026, 1, 1), None, None, (dt.date(2026, 1, 1), 120)),  # pinned, as before
    (dt.date(2026, 3, 1), dt.date(2026, 3, 7), None, (dt.date(2026, 3, 1), 7)),
    (dt.date(2026, 3, 1), dt.date(2026, 3, 7), 7, (dt.date(2026, 3, 1), 7)),
])
def test_the_generated_window_ends_today_unless_pinned(start, end, days, expected) -> None:
    first, n = data_window(start, end, days, TODAY)
    assert (first, n) == expected
    assert first + dt.timedelta(days=n - 1) == (end or (TODAY if start is None else first + dt.timedelta(days=n - 1)))


@pytest.mark.parametrize(("start", "end", "days", "message"), [
    (dt.date(2026, 3, 7), dt.date(2026, 3, 1), None, "before --start"),
    (dt.date(2026, 3, 1), dt.date(2026, 3, 7), 30, "not --days 30"),
    (None, None, 0, "days"),
])
def test_a_window_that_cannot_be_is_refused(start, end, days, message) -> None:
    with pytest.raises(DatagenError, match=message):
        data_window(start, end, days, TODAY)


def test_the_cli_generates_up_to_today(tmp_path, monkeypatch) -> None:
    from pipelines.cli import main

    monkeypatch.setenv("TIDEMARK_HOME", str(tmp_path / "home"))
    umask = os.umask(0o022)  # the CLI sets the process's umask: give the rest of the session its own back
    try:
        assert main(["datagen", "--rows", "2000", "--days", "3"]) == 0
    finally:
        os.umask(umask)
    manifest = json.loads((tmp_path / "home" / "raw" / "_manifest.json").read_text())
    today = dt.datetime.now(dt.UTC).date()
    assert manifest["start"] == (today - dt.timedelta(days=2)).isoformat()
    assert (tmp_path / "home").stat().st_mode & 0o077 == 0  # private, as every home tidemark makes
