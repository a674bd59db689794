"""A team's project with a stream feature view, served: a Feast repo (a StreamFeatureView of a
count and a sum over the last hour of ``amount`` per account, fed by the push source
``acct_push``), its ``tidemark.yaml`` whose model pushes its scored events there, and a regressor
whose prediction is the account's event count over the last hour (so a response shows what the
server read). Real Redis, real MLflow (SQLite), real Spark for the training frame's check.

Importing modules get module-scoped fixtures: ``stream_settings`` (the project applied),
``stream_server`` (the model registered, promoted and served, with the admin token ``TOKEN``) and
``stream_http`` (a client of it)."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.parquet as pq
import pytest
from sklearn.linear_model import LinearRegression
from starlette.testclient import TestClient

from features.sdk import FeatureClient
from pipelines import model_registry
from pipelines.cli_serving import push_scored
from pipelines.model_registry import register_model
from serving.server import Server, build_server
from tests.integration.redis_servers import RedisProc
from tidemark.settings import Settings, SparkSettings

MODEL = "acct-score"
PUSH_SOURCE = "acct_push"
VIEW = "acct_windows"
TOKEN = "push-admin-token"
FEATURES = [f"{VIEW}:amt_count_1h"]

DEFINITIONS = '''\
from datetime import timedelta

from feast import Entity, Field, PushSource, ValueType
from feast.aggregation import Aggregation
from feast.infra.offline_stores.contrib.spark_offline_store.spark_source import SparkSource
from feast.stream_feature_view import StreamFeatureView
from feast.types import Float64, Int64

account = Entity(name="account", join_keys=["account_id"], value_type=ValueType.INT64)
history = SparkSource(name="acct_history", path={history!r}, file_format="parquet",
                      timestamp_field="event_timestamp")
acct_push = PushSource(name="acct_push", batch_source=history)
acct_windows = StreamFeatureView(
    name="acct_windows", entities=[account], source=acct_push, timestamp_field="event_timestamp",
    schema=[Field(name="amt_count_1h", dtype=Int64), Field(name="amt_sum_1h", dtype=Float64)],
    aggregations=[Aggregation(column="amount", function="count", time_window=timedelta(hours=1), name="amt_count_1h"),
                  Aggregation(column="amount", function="sum", time_window=timedelta(hours=1), name="amt_sum_1h")],
    tags={{"tidemark.event_id": "event_id"}})
'''

PROJECT = """\
models:
  - name: acct-score
    features: [acct_windows:amt_count_1h]
    task: regression
    label_source: {table: labels, label: y}
    request_columns: [amount]
    train: tests.integration.stream_project:unused
    push_scored_events: acct_push
"""


def write_project(root: Path, redis_url: str) -> None:
    """The Feast repo, its definitions and tidemark.yaml under ``root``; one old event in the history."""
    history = root / "history"
    history.mkdir(parents=True)
    old = pd.DataFrame({"account_id": [1], "event_timestamp": [pd.Timestamp("2020-01-01", tz="UTC")],
                        "amount": [1.0], "event_id": [1]})
    pq.write_table(pa.Table.from_pandas(old, preserve_index=False), history / "part-0.parquet", coerce_timestamps="us")
    (root / "feature_store.yaml").write_text(
        f"project: acct_project\nprovider: local\nregistry: {root / 'registry.db'}\n"
        "offline_store:\n  type: features.offline_store.SparkAsofOfflineStore\n"
        f"online_store:\n  type: features.online_store.PackedRedisOnlineStore\n  url: {redis_url}\n"
        "entity_key_serialization_version: 3\n")
    (root / "definitions.py").write_text(DEFINITIONS.format(history=str(history)))
    (root / "tidemark.yaml").write_text(PROJECT)


def register_count_model(settings: Settings, fc: FeatureClient) -> None:
    """Register and promote ``MODEL``: a regressor whose prediction is the account's event count
    over the last hour (its weight on ``amount`` is 0)."""
    rng = np.random.default_rng(1)
    frame = pd.DataFrame({"account_id": np.arange(200, dtype=np.int64), "amt_count_1h": rng.integers(0, 9, 200),
                          "amount": rng.gamma(2.0, 20.0, 200),
                          "event_timestamp": pd.Timestamp.now(tz="UTC").floor("s")})
    frame["y"] = frame["amt_count_1h"].astype(float)
    model = LinearRegression().fit(frame[["amt_count_1h", "amount"]], frame["y"])
    version = register_model(model, MODEL, features=FEATURES, frame=frame, label="y", task="regression",
                             feature_client=fc, label_source={"table": str(settings.home / "labels"), "label": "y"})
    model_registry.promote(model_registry.connect(settings), MODEL, version.version, first=True)


@pytest.fixture(scope="module")
def stream_settings(tmp_path_factory: pytest.TempPathFactory, module_redis: RedisProc) -> Settings:
    home = tmp_path_factory.mktemp("stream-serving-home")
    root = home / "repo"
    write_project(root, module_redis.url)
    settings = Settings(home=home, spark=SparkSettings(master="local[2]", shuffle_partitions=4),
                        redis_url=module_redis.url, feast_repo=root, model_name=MODEL, admin_token=TOKEN)
    FeatureClient(settings).apply()
    return settings


@pytest.fixture(scope="module")
def stream_server(stream_settings: Settings) -> Iterator[Server]:
    """The model registered, promoted and served as `tidemark serve` serves the project
    (push_scored_events from tidemark.yaml)."""
    fc = FeatureClient(stream_settings)
    register_count_model(stream_settings, fc)
    server = build_server(stream_settings, models=[MODEL], feature_client=fc, refresh_s=3600, prediction_log=False,
                          push_scored=push_scored(stream_settings, [MODEL]))
    try:
        yield server
    finally:
        server.close()


@pytest.fixture(scope="module")
def stream_http(stream_server: Server) -> Iterator[TestClient]:
    with TestClient(stream_server.app) as client:
        yield client


def window_count(settings: Settings, account: int) -> int:
    """The account's event count over the last hour, read from the online store now."""
    online = FeatureClient(settings).online_features([{"account_id": account}], FEATURES)
    return int(online.frame["amt_count_1h"].iloc[0])
