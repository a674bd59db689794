"""A Feast repo whose view holds Map, Json, Struct, list, bytes and timestamp features, on the real
Feast CLI (``feast apply``, ``feast materialize``) and real Redis, read back through Feast's
``get_online_features`` and tidemark's SDK, and materialized by tidemark's Spark job too."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import textwrap
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from features.sdk import FeatureClient
from tidemark.settings import Settings, SparkSettings

pytestmark = pytest.mark.integration

ROOT = Path(__file__).resolve().parents[2]
FEATURES = ["rich:tags", "rich:attrs", "rich:point", "rich:scores", "rich:blob", "rich:seen_at"]
NOW = datetime.now(UTC).replace(microsecond=0)
T = datetime(2026, 1, 2, 3, 4, 5, tzinfo=UTC)

# thing 1: every feature set; thing 2: every feature null; thing 3: an older row then a newer one
ROWS = [
    {"thing_id": 1, "ts": NOW - timedelta(hours=2), "tags": [("colour", "red"), ("size", "L")],
     "attrs": json.dumps({"a": [1, 2], "b": None}), "point": {"x": 3, "label": "p,1"},
     "scores": [1.5, -2.0, 0.0], "blob": b"\x00\xff{}", "seen_at": T},
    {"thing_id": 2, "ts": NOW - timedelta(hours=2), "tags": None, "attrs": None, "point": None,
     "scores": None, "blob": None, "seen_at": None},
    {"thing_id": 3, "ts": NOW - timedelta(hours=5), "tags": [("old", "1")], "attrs": "[1]",
     "point": {"x": 0, "label": "old"}, "scores": [9.0], "blob": b"old", "seen_at": T},
    {"thing_id": 3, "ts": NOW - timedelta(hours=1), "tags": [], "attrs": '"text"',
     "point": {"x": -1, "label": None}, "scores": [], "blob": b"", "seen_at": T + timedelta(days=1)},
]
EXPECTED = {  # what Feast's get_online_features(...).to_dict() gives, per thing (4: unknown)
    "tags": [{"colour": "red", "size": "L"}, None, {}, None],
    "attrs": [{"a": [1, 2], "b": None}, None, "text", None],
    "point": [{"x": 3.0, "label": "p,1"}, None, {"x": -1.0, "label": None}, None],  # Feast's own conversion
    "scores": [[1.5, -2.0, 0.0], None, [], None],
    "blob": [b"\x00\xff{}", None, b"", None],
    "seen_at": [T, None, T + timedelta(days=1), None],
}
SCHEMA = pa.schema([("thing_id", pa.int64()), ("ts", pa.timestamp("us", tz="UTC")),
                    ("tags", pa.map_(pa.string(), pa.string())), ("attrs", pa.string()),
                    ("point", pa.struct([("x", pa.int64()), ("label", pa.string())])),
                    ("scores", pa.list_(pa.float64())), ("blob", pa.binary()),
                    ("seen_at", pa.timestamp("us", tz="UTC"))])

DEFINITIONS = """
from datetime import timedelta

from feast import Entity, FeatureView, Field, ValueType
from feast.infra.offline_stores.contrib.spark_offline_store.spark_source import SparkSource
from feast.types import Array, Bytes, Float64, Int64, Json, Map, String, Struct, UnixTimestamp

thing = Entity(name="thing", join_keys=["thing_id"], value_type=ValueType.INT64)
fields = [Field(name="tags", dtype=Map), Field(name="attrs", dtype=Json),
          Field(name="point", dtype=Struct({{"x": Int64, "label": String}})),
          Field(name="scores", dtype=Array(Float64)), Field(name="blob", dtype=Bytes),
          Field(name="seen_at", dtype=UnixTimestamp)]
rich = FeatureView(
    name="rich", entities=[thing], ttl=timedelta(days=2), schema=fields,
    source=SparkSource(name="rich_src", path="{data}", file_format="parquet", timestamp_field="ts"))
# Feast's own materialization (feast materialize) cannot turn an Arrow/Parquet map column into a Map
# proto (its _convert_arrow_to_proto raises TypeError "Expected dict for MAP type"): the same
# features without the Map, for the Feast CLI's materialize. (From the list, not from rich.schema,
# whose order is a set's: it differs between processes, and so would this view's packed layout.)
rich_no_map = FeatureView(name="rich_no_map", entities=[thing], ttl=timedelta(days=2),
                          schema=[f for f in fields if f.name != "tags"], source=rich.source)
"""


def _repo(root: Path, redis_url: str, project: str) -> Path:
    repo = root / project
    (repo / "data").mkdir(parents=True)
    pq.write_table(pa.Table.from_pylist(ROWS, schema=SCHEMA), repo / "data" / "part-0.parquet")
    (repo / "feature_store.yaml").write_text(textwrap.dedent(f"""\
        project: {project}
        provider: local
        registry: {repo / "registry.db"}
        entity_key_serialization_version: 3
        offline_store:
          type: features.offline_store.SparkAsofOfflineStore
          spark_conf: {{spark.master: "local[2]", spark.sql.shuffle.partitions: "2"}}
        online_store:
          type: features.online_store.PackedRedisOnlineStore
          url: {redis_url}
        """))
    (repo / "definitions.py").write_text(DEFINITIONS.format(data=repo / "data"))
    return repo


def _feast(repo: Path, *args: str) -> str:
    env = {**os.environ, "PYTHONPATH": str(ROOT), "TIDEMARK_HOME": str(repo / ".tidemark")}
    done = subprocess.run([sys.executable, "-m", "feast.cli.cli", *args], cwd=repo, env=env, check=False,
                          capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, f"feast {' '.join(args)} failed:\n{done.stdout}\n{done.stderr}"
    return done.stdout


def _feast_dict(repo: Path, features: list[str]) -> dict[str, list[Any]]:
    from feast import FeatureStore

    store = FeatureStore(repo_path=str(repo))
    rows = [{"thing_id": i} for i in (1, 2, 3, 4)]
    got = store.get_online_features(features=features, entity_rows=rows).to_dict()
    return {k: got[k] for k in EXPECTED if k in got}


def _sdk_columns(repo: Path, home: Path, redis_url: str, features: list[str]) -> dict[str, list[Any]]:
    settings = Settings(home=home, spark=SparkSettings(master="local[2]", shuffle_partitions=2),
                        redis_url=redis_url, feast_repo=repo)
    client = FeatureClient(settings)
    frame = client.online_features([{"thing_id": i} for i in (1, 2, 3, 4)], features).frame
    reader = client.online_reader()
    columns, _ = reader.read_columns(reader.plan(features), {"thing_id": [1, 2, 3, 4]})
    assert {k: v.tolist() for k, v in columns.items()} == {k: list(frame[k]) for k in columns}
    return {k: list(frame[k]) for k in columns}


def test_feast_cli_applies_materializes_and_reads_back_every_kind(tmp_path: Path, redis_url: str) -> None:
    repo = _repo(tmp_path, redis_url, "richcli")
    _feast(repo, "apply")  # a view holding a Map, a Json and a Struct no longer fails the repo
    _feast(repo, "materialize", (NOW - timedelta(days=1)).isoformat(), NOW.isoformat(), "-v", "rich_no_map")
    features = [f.replace("rich:", "rich_no_map:") for f in FEATURES if f != "rich:tags"]
    expected = {k: v for k, v in EXPECTED.items() if k != "tags"}
    assert _feast_dict(repo, features) == expected
    assert _sdk_columns(repo, tmp_path / "home", redis_url, features) == expected


def test_tidemarks_spark_materialization_writes_the_same_values(tmp_path: Path, redis_url: str) -> None:
    repo = _repo(tmp_path, redis_url, "richspark")
    _feast(repo, "apply")
    settings = Settings(home=tmp_path / "home", spark=SparkSettings(master="local[2]", shuffle_partitions=2),
                        redis_url=redis_url, feast_repo=repo)
    results = FeatureClient(settings).materialize(NOW - timedelta(days=1), NOW, views=["rich"], progress=False,
                                                  partitions=2)
    assert [r.counts.written for r in results] == [3]
    assert _feast_dict(repo, FEATURES) == EXPECTED
    assert _sdk_columns(repo, tmp_path / "home", redis_url, FEATURES) == EXPECTED
