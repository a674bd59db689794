"""Stream feature views in a Feast repo on tidemark's stores: Feast's own calls, the push path,
the backfill, faults and bad input, with a real Spark and a real redis-server."""

from __future__ import annotations

import time
from datetime import timedelta
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from features.errors import EventError, OnlineStoreUnavailable, UnknownPushSourceError
from features.online_keys import key_prefix
from features.online_reader import OnlineReader
from features.online_views import OnlineView, epoch_us
from features.push import EventPusher, backfill
from features.redis_client import RedisOnline
from features.window_state import EXPIRY_MARGIN_MS, HEADER_SIZE
from tests.features.window_oracle import Event, close, dedupe, window_value
from tests.integration.online_repo import open_repo

pytestmark = pytest.mark.integration

WINDOWS = {"1h": timedelta(hours=1), "24h": timedelta(days=1)}
FUNCTIONS = ("count", "sum", "mean", "max")
FEATURES = [f"cust_windows:amt_{f}_{w}" for w in WINDOWS for f in FUNCTIONS]
HOUR_US = 3_600_000_000


def definitions(root: Path) -> list[Any]:
    from feast import Entity, Field, PushSource, ValueType
    from feast.aggregation import Aggregation
    from feast.infra.offline_stores.contrib.spark_offline_store.spark_source import SparkSource
    from feast.stream_feature_view import StreamFeatureView
    from feast.types import Float64, Int64

    customer = Entity(name="customer", join_keys=["customer_id"], value_type=ValueType.INT64)
    history = SparkSource(name="txn_history", path=str(root / "events"), file_format="parquet",
                          timestamp_field="event_timestamp", created_timestamp_column="arrival")
    push = PushSource(name="txn_push", batch_source=history)
    aggregations = [Aggregation(column="amount", function=f, time_window=w, name=f"amt_{f}_{n}")
                    for n, w in WINDOWS.items() for f in FUNCTIONS]
    view = StreamFeatureView(
        name="cust_windows", entities=[customer], source=push, timestamp_field="event_timestamp",
        schema=[Field(name=a.name, dtype=Int64 if a.function == "count" else Float64) for a in aggregations],
        aggregations=aggregations, tags={"tidemark.event_id": "txn_id"})
    return [customer, history, push, view]


def make_events(root: Path, now: pd.Timestamp, *, customers: int = 40, rows: int = 1_500, seed: int = 5) -> list[Event]:
    """Events of the last two days, a fifth of them late. Event times sit 20 to 40 minutes past a
    whole hour before ``now``, so no event enters or leaves a window for 20 minutes after ``now``:
    the offline value at ``now`` is the online value for any read in that span."""
    rng = np.random.default_rng(seed)
    now_us = epoch_us(now.to_pydatetime())
    hours = rng.integers(0, 48, rows)
    event_us = now_us - hours * HOUR_US - rng.integers(20 * 60, 40 * 60, rows) * 1_000_000
    late = rng.random(rows) < 0.2
    arrival_us = event_us + np.where(late, rng.integers(1, 15 * 60, rows) * 1_000_000, 0)
    keys = rng.integers(0, customers, rows)
    amounts = np.round(rng.gamma(2.0, 30.0, rows), 2)
    ids = np.arange(rows, dtype=np.int64)
    replay = rng.random(rows) < 0.05  # a few ids delivered twice, the second copy later
    frame = pd.DataFrame({"customer_id": np.concatenate([keys, keys[replay]]).astype(np.int64),
                          "event_timestamp": pd.to_datetime(np.concatenate([event_us, event_us[replay]]), unit="us", utc=True),
                          "arrival": pd.to_datetime(np.concatenate([arrival_us, arrival_us[replay] + 60_000_000]),
                                                    unit="us", utc=True),
                          "amount": np.concatenate([amounts, amounts[replay]]),
                          "txn_id": np.concatenate([ids, ids[replay]])})
    (root / "events").mkdir(parents=True, exist_ok=True)
    pq.write_table(pa.Table.from_pandas(frame, preserve_index=False), root / "events" / "part-0.parquet",
                   coerce_timestamps="us", allow_truncated_timestamps=True)
    return [Event(str(k), int(e), int(a), float(v), int(i)) for k, e, a, v, i in zip(
        frame["customer_id"], frame["event_timestamp"].astype("int64") // 1000, frame["arrival"].astype("int64") // 1000,
        frame["amount"], frame["txn_id"], strict=True)]


@pytest.fixture(scope="module")
def repo(tmp_path_factory: pytest.TempPathFactory, redis_url: str) -> dict[str, Any]:
    root = tmp_path_factory.mktemp("stream-repo")
    now = pd.Timestamp.now(tz="UTC").floor("s")
    events = make_events(root, now)
    store = open_repo(root, redis_url)
    store.apply(definitions(root))
    return {"root": root, "now": now, "events": dedupe(events), "store": store}


def _oracle(events: list[Event], customers: list[int], t_us: int) -> dict[str, list[Any]]:
    out: dict[str, list[Any]] = {}
    for name, window in WINDOWS.items():
        for f in FUNCTIONS:
            w = int(window.total_seconds()) * 1_000_000
            out[f"amt_{f}_{name}"] = [window_value(events, str(c), t_us, w, f) for c in customers]
    return out


def _plain(value: Any) -> Any:
    if value is None or value is pd.NA or (isinstance(value, float) and np.isnan(value)):
        return None
    return int(value) if isinstance(value, np.integer | int) else float(value)


def test_feast_get_historical_features_computes_the_windows(repo, spark):
    store, now = repo["store"], repo["now"]
    customers = list(range(0, 45, 3))  # 40..44: no events at all
    times = [now - pd.Timedelta(minutes=m) for m in (0, 25, 90, 600)]
    entity_df = pd.DataFrame([(c, t) for t in times for c in customers], columns=["customer_id", "event_timestamp"])
    frame = store.get_historical_features(entity_df=entity_df, features=FEATURES).to_df()
    for t in times:
        rows = frame[frame["event_timestamp"] == t]
        want = _oracle(repo["events"], customers, epoch_us(t.to_pydatetime()))
        for column, expected in want.items():
            got = [_plain(v) for v in rows[column]]
            assert all(close(g, e) for g, e in zip(got, expected, strict=True)), (column, t, got, expected)


def test_backfill_then_feast_online_reads_equal_offline_at_now(repo, spark, redis_url):
    store, now = repo["store"], repo["now"]
    redis_online = RedisOnline(redis_url, timeout_ms=2_000)
    result = backfill(spark, store.get_stream_feature_view("cust_windows"), redis_online, store.project,
                      at=now.to_pydatetime())
    assert result.counts.added == result.events > 0
    again = backfill(spark, store.get_stream_feature_view("cust_windows"), redis_online, store.project,
                     at=now.to_pydatetime())
    assert again.counts.added == 0 and again.counts.duplicates == result.events  # idempotent
    customers = list(range(45))
    want = _oracle(repo["events"], customers, epoch_us(now.to_pydatetime()))
    online = store.get_online_features(features=FEATURES, entity_rows=[{"customer_id": c} for c in customers]).to_dict()
    view = OnlineView.from_feast(store.get_stream_feature_view("cust_windows"))
    reader = OnlineReader(redis_online, store.project, {view.name: view})
    fast, _ = reader.read_frame(reader.plan(FEATURES), {"customer_id": customers})
    for column, expected in want.items():
        feast_values = [_plain(v) for v in online[column]]
        assert all(close(g, e) for g, e in zip(feast_values, expected, strict=True)), (column, feast_values, expected)
        assert all(close(_plain(g), e) for g, e in zip(fast[column], expected, strict=True)), column


def test_a_pushed_event_is_read_at_once_and_a_replay_counts_once(repo, redis_url):
    store = repo["store"]
    redis_online = RedisOnline(redis_url, timeout_ms=2_000)
    view = OnlineView.from_feast(store.get_stream_feature_view("cust_windows"))
    pusher = EventPusher(redis_online, store.project, [view])
    reader = OnlineReader(redis_online, store.project, {view.name: view})
    plan = reader.plan(["cust_windows:amt_count_1h", "cust_windows:amt_sum_1h", "cust_windows:amt_max_1h"])
    before, _ = reader.read_frame(plan, {"customer_id": [7001]})
    assert before["amt_count_1h"].tolist() == [0] and before["amt_sum_1h"].tolist() == [0.0]
    event = {"customer_id": 7001, "event_timestamp": pd.Timestamp.now(tz="UTC"), "amount": 12.5, "txn_id": 10**9}
    assert pusher.push("txn_push", [event])["cust_windows"].added == 1
    after, _ = reader.read_frame(plan, {"customer_id": [7001]})
    assert after.iloc[0].tolist()[1:] == [1, 12.5, 12.5]
    counts = pusher.push("txn_push", pd.DataFrame([event, {**event, "txn_id": 10**9 + 1, "amount": 2.5}]))
    assert (counts["cust_windows"].added, counts["cust_windows"].duplicates) == (1, 1)
    again, _ = reader.read_frame(plan, {"customer_id": [7001]})
    assert again.iloc[0].tolist()[1:] == [2, 15.0, 12.5]


@pytest.mark.parametrize(("change", "column", "row"), [
    (lambda f: f.drop(columns=["customer_id"]), "customer_id", None),
    (lambda f: f.assign(customer_id=["7", "x"]), "customer_id", 1),
    (lambda f: f.assign(amount=[1.0, float("nan")]), "amount", 1),
    (lambda f: f.assign(amount=["1", "2"]), "amount", 0),
    (lambda f: f.assign(event_timestamp=[pd.Timestamp.now(tz="UTC"), pd.Timestamp.now(tz="UTC") + pd.Timedelta(days=3)]),
     "event_timestamp", 1),
    (lambda f: f.assign(event_timestamp=[pd.Timestamp.now(tz="UTC"), None]), "event_timestamp", 1),
    (lambda f: f.assign(txn_id=[1.0, None]), "txn_id", 1),
])
def test_a_bad_row_stores_nothing_and_names_row_and_column(repo, redis_url, change, column, row):
    store = repo["store"]
    redis_online = RedisOnline(redis_url, timeout_ms=2_000)
    view = OnlineView.from_feast(store.get_stream_feature_view("cust_windows"))
    pusher = EventPusher(redis_online, store.project, [view])
    good = pd.DataFrame({"customer_id": [8001, 8002], "event_timestamp": [pd.Timestamp.now(tz="UTC")] * 2,
                         "amount": [1.0, 2.0], "txn_id": [5 * 10**9, 5 * 10**9 + 1]})
    keys = list(redis_online.writer.scan_iter(match=key_prefix(store.project) + b"{customer_id=800*"))
    with pytest.raises(EventError) as caught:
        pusher.push("txn_push", change(good))
    assert caught.value.column == column and caught.value.row == row, str(caught.value)
    assert column in str(caught.value)
    assert list(redis_online.writer.scan_iter(match=key_prefix(store.project) + b"{customer_id=800*")) == keys
    with pytest.raises(UnknownPushSourceError, match="txn_push"):
        pusher.push("txn_pushh", good)


def test_state_holds_only_the_longest_window_and_expires_with_it(repo, redis_url):
    store = repo["store"]
    redis_online = RedisOnline(redis_url, timeout_ms=2_000)
    view = OnlineView.from_feast(store.get_stream_feature_view("cust_windows"))
    pusher = EventPusher(redis_online, store.project, [view])
    now_us = epoch_us(pd.Timestamp.now(tz="UTC").to_pydatetime())
    hours = np.arange(0, 72, 0.5)  # 144 events over three days, pushed as they happened
    for i, h in enumerate(hours[::-1]):
        at = now_us - int(h * HOUR_US)
        pusher.push("txn_push", {"customer_id": 9001, "event_timestamp": at, "amount": 1.0, "txn_id": 7 * 10**9 + i},
                    at_us=at)
    key = key_prefix(store.project) + b"{customer_id=9001}:cust_windows"
    state = redis_online.writer.get(key)
    record = 16 + 8 * len(view.stream.columns)  # type: ignore[union-attr]
    held = (len(state) - HEADER_SIZE) // record
    # every event of the last 30 hours (1.25 windows: 60), and at most a further quarter window
    # (12) that waits for the next trim; never the three days pushed
    assert 60 <= held <= 72, held
    reader = OnlineReader(redis_online, store.project, {view.name: view})
    frame, _ = reader.read_frame(reader.plan(["cust_windows:amt_count_24h", "cust_windows:amt_count_1h"]),
                                 {"customer_id": [9001]})
    assert frame.iloc[0].tolist()[1:] == [48, 2]
    ttl_ms = redis_online.writer.pttl(key)
    assert 30 * HOUR_US // 1000 < ttl_ms <= 30 * HOUR_US // 1000 + EXPIRY_MARGIN_MS + 1_000


def test_redis_down_during_a_push_is_a_typed_error_within_the_timeout(repo, redis_proc):
    store = repo["store"]
    redis_online = RedisOnline(redis_proc.url, timeout_ms=200, write_timeout_ms=300)
    view = OnlineView.from_feast(store.get_stream_feature_view("cust_windows"))
    pusher = EventPusher(redis_online, store.project, [view])
    event = {"customer_id": 1, "event_timestamp": pd.Timestamp.now(tz="UTC"), "amount": 1.0, "txn_id": 1}
    pusher.push("txn_push", event)
    redis_proc.pause()
    try:
        started = time.perf_counter()
        with pytest.raises(OnlineStoreUnavailable):
            pusher.push("txn_push", {**event, "txn_id": 2})
        assert time.perf_counter() - started < 2.0
    finally:
        redis_proc.resume()
    assert pusher.push("txn_push", {**event, "txn_id": 2})["cust_windows"].added in (0, 1)


def test_pushes_and_reads_on_a_redis_cluster(repo, redis_cluster):
    """Entities spread over the cluster's slots: one push reaches every node, reads gather them."""
    store = repo["store"]
    redis_online = RedisOnline(redis_cluster.url, timeout_ms=2_000)
    view = OnlineView.from_feast(store.get_stream_feature_view("cust_windows"))
    pusher = EventPusher(redis_online, store.project, [view])
    now = pd.Timestamp.now(tz="UTC")
    customers = list(range(100, 160))
    rows = pd.DataFrame({"customer_id": customers * 2, "event_timestamp": [now - pd.Timedelta(minutes=5)] * 120,
                         "amount": [1.0] * 60 + [2.0] * 60, "txn_id": range(9 * 10**9, 9 * 10**9 + 120)})
    assert pusher.push("txn_push", rows)["cust_windows"].added == 120
    assert pusher.push("txn_push", rows)["cust_windows"].duplicates == 120
    reader = OnlineReader(redis_online, store.project, {view.name: view})
    frame, _ = reader.read_frame(reader.plan(["cust_windows:amt_count_1h", "cust_windows:amt_sum_1h"]),
                                 {"customer_id": customers})
    assert frame["amt_count_1h"].tolist() == [2] * 60 and frame["amt_sum_1h"].tolist() == [3.0] * 60
