"""FeatureClient end to end on tiny offline tables in the documented layout (real Spark, Feast)."""

from __future__ import annotations

from collections.abc import Iterator

import pandas as pd
import pytest

from features.embedded_redis import EmbeddedRedis
from features.errors import MissingColumnError, TimestampTypeError, UnknownFeatureError
from features.sdk import FeatureClient
from tests.integration.offline_tables import write_by_date, write_transactions
from tidemark.settings import Settings, SparkSettings

pytestmark = pytest.mark.integration

T0 = pd.Timestamp("2026-01-10", tz="UTC")


@pytest.fixture(scope="module")
def client(tmp_path_factory, spark) -> Iterator[FeatureClient]:
    home = tmp_path_factory.mktemp("home")
    offline = home / "offline"
    h = pd.Timedelta("1h")
    # customer 1's payment of 2h becomes known 3 hours late
    write_transactions(pd.DataFrame({"customer_id": [1, 1, 2], "event_timestamp": [T0, T0 + 2 * h, T0],
                                     "amount": [10.0, 20.0, 5.0],
                                     "arrival_timestamp": [T0 + pd.Timedelta("1s"), T0 + 5 * h, T0 + pd.Timedelta("1s")]}),
                       home / "raw")
    profile = pd.DataFrame({"customer_id": [1, 2], "event_timestamp": [T0 - 30 * 24 * h] * 2,
                            "created_timestamp": [T0 - 30 * 24 * h] * 2, "income": [40_000.0, 55_000.0],
                            "age_band": ["25-34", "45-54"], "home_country": ["DE", "FR"]})
    write_by_date(profile, offline / "customer_profile")
    merchant = pd.DataFrame({"merchant_id": [7], "event_timestamp": [T0], "created_timestamp": [T0],
                             "category": ["grocery"], "country": ["DE"], "txn_count_30d": [100],
                             "amt_mean_30d": [22.5], "fraud_rate_30d": [0.01]})
    write_by_date(merchant, offline / "merchant_stats")
    settings = Settings(home=home, spark=SparkSettings(master="local[2]", shuffle_partitions=4))
    c = FeatureClient(settings)
    c.apply()  # Feast's apply reconciles the online store too: it starts the embedded Redis
    try:
        yield c
    finally:
        assert EmbeddedRedis(settings.redis_dir).stop()


def test_training_frame_is_point_in_time_correct(client):
    entities = pd.DataFrame({
        "customer_id": [1, 1, 1, 2, 3],
        "merchant_id": [7, 7, 7, 7, 7],
        "event_timestamp": [T0 + pd.Timedelta("3h"), T0 + pd.Timedelta("6h"), T0 - pd.Timedelta("1h"),
                            T0 + pd.Timedelta("30min"), T0],
        "label": [0, 1, 0, 0, 1],
    })
    frame = client.training_frame(entities, ["customer_txn:amt_sum_24h", "customer_profile:age_band",
                                             "merchant_stats:fraud_rate_30d"])
    assert list(frame.columns) == ["customer_id", "merchant_id", "event_timestamp", "label",
                                   "amt_sum_24h", "age_band", "fraud_rate_30d"]
    # 3h: the 2h payment exists but only arrives at 5h -> the 0h one; 6h: the late one counts too;
    # before any payment, and for a customer without any, the sum is 0 (a count of none)
    assert frame["amt_sum_24h"].tolist() == [10.0, 30.0, 0.0, 5.0, 0.0]
    assert frame["age_band"].tolist()[:4] == ["25-34", "25-34", "25-34", "45-54"]
    assert pd.isna(frame["age_band"].iloc[4])     # unknown customer
    assert frame["label"].tolist() == [0, 1, 0, 0, 1]


def test_windows_slide_and_a_payment_is_not_in_its_own_windows(client):
    entities = pd.DataFrame({"customer_id": [1, 1, 1], "event_timestamp": [T0, T0 + pd.Timedelta("30min"),
                                                                           T0 + pd.Timedelta("90min")]})
    frame = client.training_frame(entities, ["customer_txn:txn_count_1h", "customer_txn:amt_mean_1h",
                                             "customer_txn:txn_count_7d"])
    # at T0 the payment of T0 is being authorised (it arrives a second later): not in its windows
    assert frame["txn_count_1h"].tolist() == [0, 1, 0]  # 90min: the payment left the 1-hour window
    assert pd.isna(frame["amt_mean_1h"].iloc[0]) and frame["amt_mean_1h"].iloc[1] == 10.0
    assert pd.isna(frame["amt_mean_1h"].iloc[2])  # a mean of none is null, its count 0
    assert frame["txn_count_7d"].tolist() == [0, 1, 1]


def test_spark_output(client):
    entities = pd.DataFrame({"customer_id": [2, 1], "event_timestamp": [T0 + pd.Timedelta("1min"),
                                                                         T0 + pd.Timedelta("6h")]})
    sdf = client.training_frame(entities, ["customer_txn:amt_max_7d"], as_spark=True)
    assert sdf.toPandas()["amt_max_7d"].tolist() == [5.0, 20.0]


def test_unknown_feature_lists_near_matches(client):
    with pytest.raises(UnknownFeatureError) as err:
        client.training_frame(pd.DataFrame({"customer_id": [1], "event_timestamp": [T0]}),
                              ["customer_txn:amt_sum_42h"])
    assert "customer_txn:amt_sum_24h" in str(err.value)
    assert err.value.near_matches


def test_missing_join_key_is_named(client):
    with pytest.raises(MissingColumnError, match="merchant_id"):
        client.training_frame(pd.DataFrame({"customer_id": [1], "event_timestamp": [T0]}),
                              ["merchant_stats:category"])


def test_string_timestamps_are_rejected_with_a_fix(client):
    with pytest.raises(TimestampTypeError, match="pd.to_datetime"):
        client.training_frame(pd.DataFrame({"customer_id": [1], "event_timestamp": ["2026-01-10"]}),
                              ["customer_profile:income"])


def test_missing_timestamp_column(client):
    with pytest.raises(MissingColumnError, match="event_timestamp"):
        client.training_frame(pd.DataFrame({"customer_id": [1]}), ["customer_profile:income"])
