"""The driver example: its data generator, its training entry points and its Feast objects.

No Spark and no Redis: the point-in-time join is done by hand with ``pandas.merge_asof``.
"""

from __future__ import annotations

import time
from datetime import UTC, datetime, timedelta
from pathlib import Path

import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.parquet as pq
import pytest
from sklearn.metrics import mean_squared_error, roc_auc_score

from examples.driver.datagen import MAX_LABEL_DELAY_US, TABLES, generate
from examples.driver.features import driver_definitions
from examples.driver.training import COMPLETION_LABEL, DURATION_LABEL, INPUTS, fit_completion, fit_duration

END = datetime(2026, 3, 1, 7, tzinfo=UTC)
DAYS, DRIVERS, CUSTOMERS, TRIPS_PER_DAY = 21, 50, 200, 400


@pytest.fixture(scope="module")
def data_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The default-sized data set (21 days, 8,400 trips), generated once for the module."""
    path = tmp_path_factory.mktemp("driver") / "data"
    began = time.perf_counter()
    counts = generate(path, end=END, days=DAYS, drivers=DRIVERS, customers=CUSTOMERS,
                      trips_per_day=TRIPS_PER_DAY, seed=0)
    assert time.perf_counter() - began < 5.0
    # END is 07:00, so the customer days run from the day of END - 21 days to the day of END.
    assert counts == {"driver_hourly_stats": DRIVERS * DAYS * 24, "customer_daily_profile": CUSTOMERS * (DAYS + 1),
                      "trips": DAYS * TRIPS_PER_DAY}
    return path


def read(data_dir: Path, table: str) -> pd.DataFrame:
    """A generated table without its ``date`` partition column."""
    return pd.read_parquet(data_dir / table).drop(columns="date")


def training_frame(data_dir: Path) -> pd.DataFrame:
    """Trips joined by hand, as of each request time, with the latest feature rows within TTL."""
    trips = read(data_dir, "trips").sort_values("event_timestamp")
    frame = trips
    for table, key, ttl in (("driver_hourly_stats", "driver_id", timedelta(days=2)),
                            ("customer_daily_profile", "customer_id", timedelta(days=7))):
        features = read(data_dir, table).drop(columns="created").sort_values("event_timestamp")
        frame = pd.merge_asof(frame, features, on="event_timestamp", by=key, direction="backward",
                              tolerance=pd.Timedelta(ttl))
    return frame.reset_index(drop=True)


def time_split(frame: pd.DataFrame, train_share: float = 0.75) -> tuple[pd.DataFrame, pd.DataFrame]:
    """Oldest ``train_share`` of the rows (by request time) for fitting, the rest for testing."""
    ordered = frame.sort_values("event_timestamp", kind="stable")
    cut = int(len(ordered) * train_share)
    return ordered.iloc[:cut], ordered.iloc[cut:]


def test_generator_is_deterministic_for_a_seed(tmp_path: Path) -> None:
    for run, seed in (("a", 7), ("b", 7), ("c", 8)):
        generate(tmp_path / run, end=END, days=2, drivers=5, customers=10, trips_per_day=50, seed=seed)
    for table in TABLES:
        a, b, c = (read(tmp_path / run, table) for run in "abc")
        pd.testing.assert_frame_equal(a, b)
        assert not a.equals(c)


def test_rerun_replaces_every_table(tmp_path: Path) -> None:
    generate(tmp_path, end=END, days=3, drivers=2, customers=2, trips_per_day=10)
    generate(tmp_path, end=END - timedelta(days=10), days=1, drivers=2, customers=2, trips_per_day=10)
    trips = read(tmp_path, "trips")
    assert len(trips) == 10
    assert trips["event_timestamp"].max() < END - timedelta(days=10)
    assert sorted(p.name for p in tmp_path.iterdir()) == sorted(TABLES)


def test_timestamps_are_utc_microseconds_in_their_date_partition(data_dir: Path) -> None:
    columns = {"driver_hourly_stats": ("event_timestamp", "created"),
               "customer_daily_profile": ("event_timestamp", "created"),
               "trips": ("event_timestamp", "label_timestamp")}
    for table, names in columns.items():
        files = sorted((data_dir / table).glob("date=*/*.parquet"))
        assert files
        for file in files:
            schema = pq.read_schema(file)
            assert "date" not in schema.names
            for name in names:
                assert schema.field(name).type == pa.timestamp("us", tz="UTC")
            logical = pq.ParquetFile(file).schema.column(schema.get_field_index("event_timestamp")).logical_type
            assert "isAdjustedToUTC=true, timeUnit=microseconds" in str(logical)
            days = pq.read_table(file).column("event_timestamp").to_pandas().dt.strftime("%Y-%m-%d")
            assert set(days) == {file.parent.name.removeprefix("date=")}


def test_feature_tables_cover_the_window_with_sane_values(data_dir: Path) -> None:
    hourly, daily = read(data_dir, "driver_hourly_stats"), read(data_dir, "customer_daily_profile")
    assert hourly["event_timestamp"].min() == END - timedelta(days=DAYS)
    assert hourly["event_timestamp"].max() == END - timedelta(hours=1)
    assert hourly.groupby("driver_id").size().eq(DAYS * 24).all()
    for frame in (hourly, daily):
        delay = frame["created"] - frame["event_timestamp"]
        assert delay.min() >= timedelta(minutes=1) and delay.max() < timedelta(hours=7)
        assert (delay > timedelta(hours=1)).any()  # some rows land late
    for rate in ("conv_rate", "acc_rate"):
        assert hourly[rate].dtype == np.float32 and hourly[rate].between(0, 1).all()
    assert hourly["avg_daily_trips"].dtype == np.int64
    assert daily["current_balance"].dtype == np.float32 and daily["avg_passenger_count"].dtype == np.float32
    by_customer = daily.sort_values("event_timestamp").groupby("customer_id")["lifetime_trip_count"]
    assert by_customer.apply(lambda counts: counts.is_monotonic_increasing).all()


def test_trips_have_unique_ids_and_labels_known_after_the_request(data_dir: Path) -> None:
    trips = read(data_dir, "trips")
    assert trips["trip_id"].is_unique
    assert trips["event_timestamp"].between(END - timedelta(days=DAYS), END, inclusive="left").all()
    delay = trips["label_timestamp"] - trips["event_timestamp"]
    assert (delay >= timedelta(0)).all() and (delay <= pd.Timedelta(MAX_LABEL_DELAY_US, "us")).all()
    assert set(trips["completed"].unique()) == {0, 1}
    assert trips["trip_minutes"].isna().eq(trips["completed"] == 0).all()
    assert 0.4 < trips["completed"].mean() < 0.8


def test_completion_is_learnable_from_request_time_features(data_dir: Path) -> None:
    frame = training_frame(data_dir)
    assert frame[list(INPUTS)].notna().all().all()
    train, test = time_split(frame)
    model = fit_completion(train)
    assert list(model.feature_names_in_) == list(INPUTS)
    auc = roc_auc_score(test[COMPLETION_LABEL], model.predict_proba(test[list(INPUTS)])[:, 1])
    assert 0.7 < auc < 0.95, auc  # learnable, not trivially separable


def test_duration_model_beats_the_mean(data_dir: Path) -> None:
    train, test = time_split(training_frame(data_dir))
    test = test[test[DURATION_LABEL].notna()]
    model = fit_duration(train)
    assert list(model.feature_names_in_) == list(INPUTS)
    error = mean_squared_error(test[DURATION_LABEL], model.predict(test[list(INPUTS)]))
    baseline = mean_squared_error(test[DURATION_LABEL], np.full(len(test), train[DURATION_LABEL].mean()))
    assert error < 0.3 * baseline, (error, baseline)


def test_training_refuses_a_frame_without_its_inputs(data_dir: Path) -> None:
    frame = training_frame(data_dir).drop(columns="acc_rate")
    with pytest.raises(ValueError, match="acc_rate"):
        fit_completion(frame)


def test_definitions_declare_the_spark_template_layout(tmp_path: Path) -> None:
    from feast import Entity, FeatureService, FeatureView, ValueType
    from feast.infra.offline_stores.contrib.spark_offline_store.spark_source import SparkSource
    from feast.types import Float32, Int64

    objects = driver_definitions(tmp_path)
    entities = {o.name: o for o in objects if isinstance(o, Entity)}
    assert {n: (e.join_key, e.value_type) for n, e in entities.items()} == {
        "driver": ("driver_id", ValueType.INT64), "customer": ("customer_id", ValueType.INT64)}
    sources = {o.name: o for o in objects if isinstance(o, SparkSource)}
    for name, source in sources.items():
        assert source.path == str(tmp_path / name)
        assert (source.timestamp_field, source.created_timestamp_column, source.date_partition_column) == (
            "event_timestamp", "created", "date")
    views = {o.name: o for o in objects if isinstance(o, FeatureView)}
    assert {n: (v.entities, v.ttl, [(f.name, f.dtype) for f in v.features]) for n, v in views.items()} == {
        "driver_hourly_stats": (["driver"], timedelta(days=2),
                                [("conv_rate", Float32), ("acc_rate", Float32), ("avg_daily_trips", Int64)]),
        "customer_daily_profile": (["customer"], timedelta(days=7),
                                   [("current_balance", Float32), ("avg_passenger_count", Float32),
                                    ("lifetime_trip_count", Int64)]),
    }
    assert {n: v.batch_source.name for n, v in views.items()} == {n: n for n in sources}
    [service] = [o for o in objects if isinstance(o, FeatureService)]
    assert service.name == "driver_activity"
    assert {p.name: [f.name for f in p.features] for p in service.feature_view_projections} == {
        n: [f.name for f in v.features] for n, v in views.items()}
