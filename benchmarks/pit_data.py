"""Data and Feast repos for ``pit_join.py``: generated histories, cached on disk.

One feature view, int64 key, 5 float64 features, ~100 rows per key over 90 days, event times
unique per row (optionally 1% full ties); entity rows over the same span, ~5% of keys unseen.
"""

from __future__ import annotations

import argparse
import contextlib
import io
import json
import logging
import shutil
import time
import warnings
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import timedelta
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.parquet as pq

if TYPE_CHECKING:
    from feast import FeatureStore

log = logging.getLogger("pit_join")

KEY = "customer_id"
TS = "event_timestamp"
CREATED = "created"
FEATURES = [f"feature_{i}" for i in range(5)]
VIEW = "customer_stats"
REFS = [f"{VIEW}:{f}" for f in FEATURES]
COMPARE = [KEY, TS, *FEATURES]
STORES = ("ours", "feast", "pandas")
FILES = 8
ROWS_PER_KEY = 100
BASE_US = int(pd.Timestamp("2026-01-01", tz="UTC").value // 1_000)
SPAN_US = 90 * 86_400 * 1_000_000
DATA_VERSION = "v1"

@dataclass(frozen=True)
class Size:
    """One benchmark size: entity rows (predictions) against feature rows (history)."""

    entity_rows: int
    feature_rows: int

    @property
    def label(self) -> str:
        return f"{short(self.entity_rows)} x {short(self.feature_rows)}"


def distinct_offsets(rng: np.random.Generator, n: int, span: int) -> np.ndarray:
    """``n`` distinct integer offsets in ``[0, span)``, ascending (microseconds)."""
    return np.sort(rng.integers(0, span - n + 1, n)) + np.arange(n)


def feature_table(size: Size, seed: int, ties: bool) -> pa.Table:
    """The feature history: ~``ROWS_PER_KEY`` rows per key, event times unique, time-ordered.

    With ``ties``, 1% of the rows are repeated with the same event and created time but new
    feature values (a full tie, which Feast's store answers with one row per tied candidate).
    """
    rng = np.random.default_rng(seed)
    n = size.feature_rows
    keys = rng.integers(0, max(1, n // ROWS_PER_KEY), n)
    event = BASE_US + distinct_offsets(rng, n, SPAN_US)
    late = rng.random(n) < 0.05  # a few rows arrive hours late, the rest within minutes
    created = event + np.where(late, rng.integers(3_600, 172_800, n), rng.integers(1, 600, n)) * 1_000_000
    values = rng.standard_normal((n, len(FEATURES)))
    if ties:
        dup = np.sort(rng.choice(n, n // 100, replace=False))
        keys, event, created = (np.concatenate([a, a[dup]]) for a in (keys, event, created))
        values = np.concatenate([values, rng.standard_normal((len(dup), len(FEATURES)))])
        order = np.argsort(event, kind="stable")
        keys, event, created, values = keys[order], event[order], created[order], values[order]
    columns = {KEY: pa.array(keys, pa.int64()), TS: _us(event), CREATED: _us(created)}
    columns.update({f: pa.array(values[:, i]) for i, f in enumerate(FEATURES)})
    return pa.table(columns)


def entity_table(size: Size, seed: int) -> pa.Table:
    """Prediction rows over the same time span, unordered; ~5% of keys have no history."""
    rng = np.random.default_rng(seed + 1)
    n_keys = max(1, size.feature_rows // ROWS_PER_KEY)
    n = size.entity_rows
    keys = rng.integers(0, n_keys + max(1, n_keys // 20), n)
    stamps = BASE_US + rng.permutation(distinct_offsets(rng, n, SPAN_US))
    return pa.table({KEY: pa.array(keys, pa.int64()), TS: _us(stamps)})


def _us(micros: np.ndarray) -> pa.Array:
    return pa.array(micros.astype("datetime64[us]"), pa.timestamp("us", tz="UTC"))


def dataset_dir(workdir: Path, size: Size, seed: int, ties: bool) -> Path:
    """Generate (once) and return the folder holding ``features/`` and ``entities.parquet``."""
    name = f"{DATA_VERSION}-e{size.entity_rows}-f{size.feature_rows}-s{seed}{'-ties' if ties else ''}"
    folder = workdir / "data" / name
    if (folder / "_COMPLETE").exists():
        log.info("data %s: cached", name)
        return folder
    shutil.rmtree(folder, ignore_errors=True)
    started = time.perf_counter()
    table = feature_table(size, seed, ties)
    (folder / "features").mkdir(parents=True)
    chunk = -(-table.num_rows // FILES)
    for i in range(FILES):
        pq.write_table(table.slice(i * chunk, chunk), folder / "features" / f"part-{i:02d}.parquet",
                       coerce_timestamps="us")
    pq.write_table(entity_table(size, seed), folder / "entities.parquet", coerce_timestamps="us")
    (folder / "_COMPLETE").write_text(json.dumps({"rows": table.num_rows}))
    log.info("data %s: generated in %.1f s", name, time.perf_counter() - started)
    return folder


def load_frames(folder: Path) -> tuple[pd.DataFrame, pd.DataFrame]:
    """The entity frame (ns, UTC, as a user holds it) and the feature frame for merge_asof."""
    entities = pq.read_table(folder / "entities.parquet").to_pandas()
    entities[TS] = entities[TS].astype("datetime64[ns, UTC]")
    feats = pq.read_table(folder / "features", columns=[KEY, TS, *FEATURES]).to_pandas()
    feats[TS] = feats[TS].astype("datetime64[ns, UTC]")
    return entities, feats


def feature_store(kind: str, data: Path, repo: Path) -> FeatureStore:
    """A fresh Feast repo at ``repo`` with one feature view over ``data``, on store ``kind``."""
    import yaml
    from feast import Entity, FeatureStore, FeatureView, Field, ValueType
    from feast.infra.offline_stores.contrib.spark_offline_store.spark_source import SparkSource
    from feast.types import Float64

    offline = {"type": "spark"} if kind == "feast" else {
        "type": "features.offline_store.SparkAsofOfflineStore", "filter_by_created_timestamp": False}
    shutil.rmtree(repo, ignore_errors=True)
    repo.mkdir(parents=True)
    (repo / "feature_store.yaml").write_text(yaml.safe_dump({
        "project": "pit_bench", "provider": "local", "registry": str(repo / "registry.db"),
        "offline_store": offline, "online_store": {"type": "sqlite", "path": str(repo / "online.db")},
        "entity_key_serialization_version": 3,
    }))
    with quiet():
        customer = Entity(name="customer", join_keys=[KEY], value_type=ValueType.INT64)
        view = FeatureView(
            name=VIEW, entities=[customer], ttl=timedelta(0),
            schema=[Field(name=f, dtype=Float64) for f in FEATURES],
            source=SparkSource(name="customer_src", path=str(data), file_format="parquet",
                               timestamp_field=TS, created_timestamp_column=CREATED),
        )
        store = FeatureStore(repo_path=str(repo))
        store.apply([customer, view])
    return store


@contextlib.contextmanager
def quiet() -> Iterator[None]:
    """Swallow Feast's stdout prints ("Pulling …") and its RuntimeWarnings (alpha notices)."""
    with warnings.catch_warnings(), contextlib.redirect_stdout(io.StringIO()):
        warnings.simplefilter("ignore", RuntimeWarning)
        warnings.simplefilter("ignore", DeprecationWarning)
        warnings.simplefilter("ignore", FutureWarning)
        yield


def short(n: int) -> str:
    """1000000 -> "1M", 100000 -> "100k"."""
    for unit, scale in (("M", 1_000_000), ("k", 1_000)):
        if n >= scale and n % (scale // 10) == 0:
            return f"{n / scale:g}{unit}"
    return str(n)


def parse_count(text: str) -> int:
    """``100k`` -> 100000, ``10m`` -> 10000000, ``2500`` -> 2500."""
    text = text.strip().lower().replace("_", "")
    scale = {"k": 1_000, "m": 1_000_000}.get(text[-1:], 1)
    try:
        return int(float(text[:-1] if scale > 1 else text) * scale)
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r} is not a row count; write e.g. 100k or 1m") from None
