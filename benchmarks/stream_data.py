"""Data and Feast definitions for ``stream_features.py``: card-payment events and their windows.

One entity (``customer_id``, int64), one event column (``amount``), event ids (``txn_id``) and an
arrival time (``arrival``). The stream view computes count, sum, mean and max of ``amount`` over
1 h, 24 h and 7 days (12 features); the plain views beside it are what tidemark does today.
"""

from __future__ import annotations

import json
import logging
import shutil
import time
from dataclasses import dataclass
from datetime import timedelta
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.parquet as pq

log = logging.getLogger("stream_features")

KEY = "customer_id"
TS = "event_timestamp"
ARRIVAL = "arrival"
EVENT_ID = "txn_id"
US = 1_000_000
WINDOWS = {"1h": timedelta(hours=1), "24h": timedelta(days=1), "7d": timedelta(days=7)}
WINDOW_US = {n: int(w.total_seconds()) * US for n, w in WINDOWS.items()}
FUNCTIONS = ("count", "sum", "mean", "max")
WINDOW_FEATURES = [f"amt_{f}_{n}" for n in WINDOWS for f in FUNCTIONS]
PACKED_FEATURES = [f"packed_{i:02d}" for i in range(len(WINDOW_FEATURES))]
PACKED_INT = {f for i, f in enumerate(PACKED_FEATURES) if i % 4 == 0}  # the counts' twins are int64
GUARD_US = 20 * 60 * US  # no event within this of a window edge: values hold for 20 min
OFFLINE_SPAN_US = 30 * 86_400 * US
OFFLINE_EVENTS_PER_KEY = 100  # ~23 in the 7-day window, ~3 in 24 h
OFFLINE_BASE_US = int(pd.Timestamp("2026-01-01", tz="UTC").value // 1_000)
DATA_VERSION = "v1"


# --- Feast definitions --------------------------------------------------------------------------


def definitions(history: Path, packed: Path | None = None, *, feast_peer: bool = False) -> list[Any]:
    """The customer entity, the event history and push source, and the views.

    tidemark's projects get the stream view ``cust_windows`` (12 windowed features over
    ``txn_push``), the plain view ``txn_asof`` (``amount``, as-of join, today's offline path) and,
    with ``packed``, ``cust_packed`` (12 plain features: today's packed online read). Feast's
    project (``feast_peer``) gets ``txn_latest``, a plain view over ``txn_push`` (what Feast users
    push into), and the same stream view over a second push source ``txn_push_agg``, to show what
    Feast does with it."""
    from feast import Entity, FeatureView, Field, PushSource, ValueType
    from feast.aggregation import Aggregation
    from feast.infra.offline_stores.contrib.spark_offline_store.spark_source import SparkSource
    from feast.stream_feature_view import StreamFeatureView
    from feast.types import Float64, Int64

    customer = Entity(name="customer", join_keys=[KEY], value_type=ValueType.INT64)
    source = SparkSource(name="txn_history", path=str(history), file_format="parquet", timestamp_field=TS,
                         created_timestamp_column=ARRIVAL)
    push = PushSource(name="txn_push", batch_source=source)
    aggs = [Aggregation(column="amount", function=f, time_window=w, name=f"amt_{f}_{n}")
            for n, w in WINDOWS.items() for f in FUNCTIONS]
    schema = [Field(name=a.name, dtype=Int64 if a.function == "count" else Float64) for a in aggs]
    out: list[Any] = [customer, source, push]
    if feast_peer:
        agg_push = PushSource(name="txn_push_agg", batch_source=source)
        latest = FeatureView(name="txn_latest", entities=[customer], ttl=timedelta(0), source=push,
                             schema=[Field(name="amount", dtype=Float64), Field(name=EVENT_ID, dtype=Int64)])
        windows = StreamFeatureView(name="cust_windows", entities=[customer], source=agg_push, timestamp_field=TS,
                                    schema=schema, aggregations=aggs, tags={"tidemark.event_id": EVENT_ID})
        return [*out, agg_push, latest, windows]
    out.append(StreamFeatureView(name="cust_windows", entities=[customer], source=push, timestamp_field=TS,
                                 schema=schema, aggregations=aggs, tags={"tidemark.event_id": EVENT_ID}))
    out.append(FeatureView(name="txn_asof", entities=[customer], ttl=timedelta(0), source=source,
                           schema=[Field(name="amount", dtype=Float64)]))
    if packed is not None:
        packed_source = SparkSource(name="packed_src", path=str(packed), file_format="parquet", timestamp_field=TS)
        out.append(FeatureView(name="cust_packed", entities=[customer], ttl=timedelta(days=1), source=packed_source,
                               schema=[Field(name=f, dtype=Int64 if f in PACKED_INT else Float64)
                                       for f in PACKED_FEATURES]))
    return out


# --- online: the state behind the reads ---------------------------------------------------------


def window_history(rng: np.random.Generator, customers: np.ndarray, per_customer: np.ndarray, now_us: int,
                   first_id: int) -> pd.DataFrame:
    """``per_customer[i]`` events of ``customers[i]`` in the last 7 days, none within
    :data:`GUARD_US` of a window's edge (so the values at ``now_us`` hold for 20 minutes)."""
    keys = np.repeat(customers, per_customer)
    n = len(keys)
    horizon = WINDOW_US["7d"] - GUARD_US
    age = rng.integers(60 * US, horizon, n)
    for w in WINDOW_US.values():
        near = (age > w - GUARD_US) & (age <= w)
        age[near] -= GUARD_US
    event = now_us - age
    return pd.DataFrame({KEY: keys.astype(np.int64), TS: pd.to_datetime(event, unit="us", utc=True),
                         ARRIVAL: pd.to_datetime(event, unit="us", utc=True),
                         "amount": np.round(rng.gamma(2.0, 30.0, n), 2),
                         EVENT_ID: np.arange(first_id, first_id + n, dtype=np.int64)})


def direct_windows(events: pd.DataFrame, customers: np.ndarray, at_us: int) -> pd.DataFrame:
    """The 12 window values of ``customers`` at ``at_us`` computed straight from the events (every
    event has arrived, ids are distinct): one row per customer, in order; NaN for no value."""
    e = events[TS].to_numpy(dtype="datetime64[us]").astype(np.int64)
    arrived = events[ARRIVAL].to_numpy(dtype="datetime64[us]").astype(np.int64)
    mine = events[KEY].isin(customers).to_numpy()
    frame = pd.DataFrame({KEY: events[KEY].to_numpy()[mine], "e": e[mine], "a": np.maximum(arrived[mine], e[mine]),
                          "v": events["amount"].to_numpy()[mine]})
    return windows_of(frame, pd.DataFrame({KEY: customers, "t": at_us})).drop(columns=[KEY, "t"])


def windows_of(events: pd.DataFrame, rows: pd.DataFrame) -> pd.DataFrame:
    """``rows`` (``KEY``, ``t`` µs) with the 12 windows over ``events`` (``KEY``, ``e``, ``a``,
    ``v``): events with e in (t - w, t] that arrived by t. Quadratic per key: for samples only."""
    by_key = {k: g for k, g in events.groupby(KEY, sort=False)}
    out = {name: np.full(len(rows), np.nan) for name in WINDOW_FEATURES}
    for i, (k, t) in enumerate(zip(rows[KEY].tolist(), rows["t"].tolist(), strict=True)):
        g = by_key.get(k)
        for n, w in WINDOW_US.items():
            v = np.empty(0) if g is None else g["v"].to_numpy()[((g["e"] > t - w) & (g["e"] <= t) & (g["a"] <= t))
                                                               .to_numpy()]
            out[f"amt_count_{n}"][i] = len(v)
            out[f"amt_sum_{n}"][i] = v.sum()
            if len(v):
                out[f"amt_mean_{n}"][i] = v.sum() / len(v)
                out[f"amt_max_{n}"][i] = v.max()
    return rows.assign(**out)


def fresh_events(rng: np.random.Generator, n: int, customers: int, now_us: int, first_id: int) -> pd.DataFrame:
    """``n`` new events (ids from ``first_id``) of customers drawn from ``customers``, all in the
    last few seconds before ``now_us``: what a payment stream pushes."""
    event = now_us - rng.integers(0, 5 * US, n)
    stamps = pd.to_datetime(event, unit="us", utc=True)
    return pd.DataFrame({KEY: rng.integers(0, customers, n).astype(np.int64), TS: stamps, ARRIVAL: stamps,
                         "amount": np.round(rng.gamma(2.0, 30.0, n), 2),
                         EVENT_ID: np.arange(first_id, first_id + n, dtype=np.int64)})


def packed_rows(rng: np.random.Generator, customers: int, now_us: int) -> tuple[np.ndarray, list[np.ndarray]]:
    """Event times and 12 columns (counts' twins int64, the rest float64) of ``cust_packed``."""
    event = now_us - rng.integers(60 * US, 6 * 3600 * US, customers)
    columns = [rng.integers(0, 50, customers).astype(np.int64) if f in PACKED_INT else rng.gamma(2.0, 30.0, customers)
               for f in PACKED_FEATURES]
    return event, columns


# --- offline: entity rows over an event history -------------------------------------------------


@dataclass(frozen=True)
class OfflineSize:
    entity_rows: int
    events: int

    @property
    def label(self) -> str:
        return f"{_short(self.entity_rows)} x {_short(self.events)}"


def offline_dataset(workdir: Path, size: OfflineSize, seed: int) -> Path:
    """Generate (once) and return a folder with ``events/`` (8 Parquet files) and ``entities.parquet``.

    ``events // 100`` customers, ~100 events each over 30 days (so ~23 in the 7-day window), event
    times distinct, 5% of events arriving 1 minute to 2 hours late; entity rows over the same 30
    days, event times distinct, ~5% of customers without history."""
    folder = workdir / "data" / f"{DATA_VERSION}-e{size.entity_rows}-v{size.events}-s{seed}"
    if (folder / "_COMPLETE").exists():
        return folder
    shutil.rmtree(folder, ignore_errors=True)
    started = time.perf_counter()
    rng = np.random.default_rng(seed)
    n, keys = size.events, max(1, size.events // OFFLINE_EVENTS_PER_KEY)
    event = OFFLINE_BASE_US + np.sort(rng.integers(0, OFFLINE_SPAN_US - n, n)) + np.arange(n)
    late = rng.random(n) < 0.05
    arrival = event + np.where(late, rng.integers(60, 7_200, n), rng.integers(0, 10, n)) * US
    table = pa.table({KEY: pa.array(rng.integers(0, keys, n), pa.int64()), TS: _stamps(event),
                      ARRIVAL: _stamps(arrival), "amount": pa.array(np.round(rng.gamma(2.0, 30.0, n), 2)),
                      EVENT_ID: pa.array(np.arange(n, dtype=np.int64))})
    (folder / "events").mkdir(parents=True)
    chunk = -(-n // 8)
    for i in range(8):
        pq.write_table(table.slice(i * chunk, chunk), folder / "events" / f"part-{i}.parquet", coerce_timestamps="us")
    m = size.entity_rows
    times = OFFLINE_BASE_US + rng.permutation(np.sort(rng.integers(0, OFFLINE_SPAN_US - m, m)) + np.arange(m))
    entities = pa.table({KEY: pa.array(rng.integers(0, keys + max(1, keys // 20), m), pa.int64()), TS: _stamps(times)})
    pq.write_table(entities, folder / "entities.parquet", coerce_timestamps="us")
    (folder / "_COMPLETE").write_text(json.dumps({"events": n, "entity_rows": m}))
    log.info("offline data %s generated in %.1f s", size.label, time.perf_counter() - started)
    return folder


def offline_events(folder: Path) -> pd.DataFrame:
    """The events as (KEY, e, a, v) with µs integers, for the direct computation."""
    table = pq.read_table(folder / "events", columns=[KEY, TS, ARRIVAL, "amount"])
    e = table[TS].to_numpy().astype("datetime64[us]").astype(np.int64)
    a = table[ARRIVAL].to_numpy().astype("datetime64[us]").astype(np.int64)
    return pd.DataFrame({KEY: table[KEY].to_numpy(), "e": e, "a": np.maximum(a, e), "v": table["amount"].to_numpy()})


def _stamps(micros: np.ndarray) -> pa.Array:
    return pa.array(micros.astype("datetime64[us]"), pa.timestamp("us", tz="UTC"))


def _short(n: int) -> str:
    for unit, scale in (("M", 1_000_000), ("k", 1_000)):
        if n >= scale and n % (scale // 10) == 0:
            return f"{n / scale:g}{unit}"
    return str(n)
