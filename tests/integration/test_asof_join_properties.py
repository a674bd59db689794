"""The Spark as-of join against the pandas oracle, on random histories (hypothesis)."""

from __future__ import annotations

from datetime import timedelta

import numpy as np
import pandas as pd
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from features.asof_join import ROW_ID, ViewSpec, asof_join
from tests.features.asof_oracle import acceptable_values

pytestmark = pytest.mark.integration

BASE = pd.Timestamp("2026-03-01", tz="UTC")
# Key parts chosen so that naive string concatenation would collide: ("1","23") vs ("12","3").
KEY_PARTS = ["1", "12", "2", "23", "3"]
FEATURE_SCHEMA = "k1 string, k2 string, ev timestamp, cr timestamp, x double, y string"


def _minutes(m: int | None) -> pd.Timestamp | None:
    return None if m is None else BASE + pd.Timedelta(minutes=m)


feature_rows = st.lists(
    st.tuples(
        st.sampled_from(KEY_PARTS), st.sampled_from(KEY_PARTS),
        st.integers(0, 40),                                  # event minute: small range => ties
        st.one_of(st.none(), st.integers(0, 30)),            # created delay; None = unknown
        st.one_of(st.none(), st.floats(-5, 5, allow_nan=False)),
        st.sampled_from(["a", "b", None]),
    ),
    max_size=30,
)
entity_rows = st.lists(
    st.tuples(st.sampled_from(KEY_PARTS), st.sampled_from(KEY_PARTS), st.one_of(st.none(), st.integers(-5, 80))),
    min_size=1, max_size=25,
)


def _frames(fr: list, er: list) -> tuple[pd.DataFrame, pd.DataFrame]:
    features = pd.DataFrame(
        [(k1, k2, _minutes(e), None if d is None else _minutes(e + d), x, y) for k1, k2, e, d, x, y in fr],
        columns=["k1", "k2", "ev", "cr", "x", "y"],
    )
    for c in ("ev", "cr"):
        features[c] = pd.to_datetime(features[c], utc=True)
    entities = pd.DataFrame([(k1, k2, _minutes(m)) for k1, k2, m in er], columns=["k1", "k2", "event_timestamp"])
    entities["event_timestamp"] = pd.to_datetime(entities["event_timestamp"], utc=True)
    entities[ROW_ID] = np.arange(len(entities), dtype=np.int64)
    return entities, features


def _run(spark, entities, features, ttl, filter_by_created):
    sf = spark.createDataFrame(features.astype(object).where(features.notna(), None), schema=FEATURE_SCHEMA)
    se = spark.createDataFrame(entities)
    view = ViewSpec("v", sf, ("k1", "k2"), ("k1", "k2"), "ev", "cr", (("x", "x"), ("y", "y")), ttl)
    out = asof_join(se, [view], timestamp_col="event_timestamp", filter_by_created=filter_by_created)
    return out.orderBy(ROW_ID).toPandas()


@settings(max_examples=40, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(fr=feature_rows, er=entity_rows, ttl_minutes=st.sampled_from([None, 0, 5, 20]), flt=st.booleans())
def test_matches_oracle_on_random_histories(spark, fr, er, ttl_minutes, flt):
    entities, features = _frames(fr, er)
    ttl = None if ttl_minutes in (None, 0) else timedelta(minutes=ttl_minutes)
    got = _run(spark, entities, features, ttl, flt)

    assert len(got) == len(entities)
    assert got[ROW_ID].tolist() == list(range(len(entities)))
    expected = acceptable_values(entities, features, keys=["k1", "k2"], ts="event_timestamp", ev="ev", cr="cr",
                                 values=["x", "y"], ttl=ttl, filter_by_created=flt)
    for i, allowed in enumerate(expected):
        row = got.iloc[i]
        value = (None if pd.isna(row["x"]) else row["x"], None if pd.isna(row["y"]) else row["y"])
        if allowed == {None}:
            assert value == (None, None), f"row {i}: expected no match, got {value}"
        else:
            assert value in allowed, f"row {i}: {value} not in {allowed}"


def test_never_returns_a_value_from_the_future(spark):
    rng = np.random.default_rng(3)
    n = 2_000
    features = pd.DataFrame({
        "k1": rng.choice(KEY_PARTS, n), "k2": rng.choice(KEY_PARTS, n),
        "ev": BASE + pd.to_timedelta(rng.integers(0, 10_000, n), unit="s"),
    })
    features["cr"] = features["ev"] + pd.to_timedelta(rng.integers(0, 3_000, n), unit="s")
    features["x"] = (features["ev"] - BASE).dt.total_seconds()  # the value encodes its own event time
    features["y"] = "v"
    entities = pd.DataFrame({"k1": rng.choice(KEY_PARTS, 500), "k2": rng.choice(KEY_PARTS, 500),
                             "event_timestamp": BASE + pd.to_timedelta(rng.integers(0, 12_000, 500), unit="s")})
    entities[ROW_ID] = np.arange(500)
    got = _run(spark, entities, features, None, True)
    t = (entities["event_timestamp"] - BASE).dt.total_seconds()
    assert (got["x"].dropna() <= t[got["x"].notna()]).all()
    assert got["x"].notna().mean() > 0.5  # not vacuous


def test_full_ties_pick_exactly_one_row_deterministically(spark):
    ts = BASE
    features = pd.DataFrame({"k1": ["1"] * 3, "k2": ["2"] * 3, "ev": [ts] * 3, "cr": [ts] * 3,
                             "x": [1.0, 3.0, 2.0], "y": ["a", "a", "a"]})
    entities = pd.DataFrame({"k1": ["1", "1"], "k2": ["2", "2"], "event_timestamp": [ts, ts + pd.Timedelta("1h")]})
    entities[ROW_ID] = np.arange(2)
    got = _run(spark, entities, features, None, True)
    assert len(got) == 2
    assert got["x"].tolist() == [3.0, 3.0]  # greatest values win a full tie, on every run


def test_compound_keys_do_not_collide(spark):
    features = pd.DataFrame({"k1": ["1", "12"], "k2": ["23", "3"], "ev": [BASE, BASE], "cr": [BASE, BASE],
                             "x": [1.0, 2.0], "y": ["first", "second"]})
    entities = pd.DataFrame({"k1": ["12", "1"], "k2": ["3", "23"], "event_timestamp": [BASE, BASE]})
    entities[ROW_ID] = np.arange(2)
    got = _run(spark, entities, features, None, True)
    assert got["y"].tolist() == ["second", "first"]
