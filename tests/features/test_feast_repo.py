"""features.feast_repo without Spark or Redis: the yaml as the source of truth, and the
definitions' fingerprint that makes FeatureClient's open-time check cheap."""

from __future__ import annotations

import os
import time
from datetime import timedelta
from pathlib import Path

from features.feast_repo import definitions_fingerprint, repo_config
from tidemark.settings import Settings, SparkSettings


def _settings(tmp_path: Path, **kwargs) -> Settings:
    return Settings(home=tmp_path / "home", spark=SparkSettings(master="local[3]"), **kwargs)


def _yaml(tmp_path: Path, online: str) -> Path:
    repo = tmp_path / "repo"
    repo.mkdir()
    (repo / "feature_store.yaml").write_text(
        "project: p\nprovider: local\nregistry: ${TIDEMARK_HOME}/reg.db\n"
        "offline_store:\n  type: features.offline_store.SparkAsofOfflineStore\n"
        f"online_store:\n  type: features.online_store.PackedRedisOnlineStore\n{online}"
        "batch_engine:\n  type: features.materialize_engine.TidemarkSparkEngine\n"
        "entity_key_serialization_version: 3\n")
    return repo


def test_the_yaml_wins_and_settings_fill_only_what_it_leaves_open(tmp_path, monkeypatch):
    monkeypatch.setenv("TIDEMARK_HOME", "/somewhere/else")
    repo = _yaml(tmp_path, "  url: redis://yaml:6379/0\n  timeout_ms: 9\n")
    config = repo_config(repo, _settings(tmp_path, redis_url="redis://settings:6379/0", online_timeout_ms=77))
    assert config.registry.path == str(tmp_path / "home" / "reg.db")  # the client's home, not the env's
    assert (config.online_store.url, config.online_store.timeout_ms) == ("redis://yaml:6379/0", 9)
    assert config.offline_store.spark_conf["spark.master"] == "local[3]"
    assert config.batch_engine_config == {"type": "features.materialize_engine.TidemarkSparkEngine"}
    assert config.repo_path == repo


def test_without_a_url_the_embedded_server_under_home_is_used(tmp_path):
    config = repo_config(_yaml(tmp_path, ""), _settings(tmp_path))
    assert config.online_store.url is None
    assert config.online_store.embedded_dir == str(tmp_path / "home" / "redis")


def _definitions(ttl_hours: int) -> list:
    from feast import Entity, FeatureView, Field, ValueType
    from feast.infra.offline_stores.contrib.spark_offline_store.spark_source import SparkSource
    from feast.types import Float64

    entity = Entity(name="e", join_keys=["e_id"], value_type=ValueType.INT64)
    source = SparkSource(name="s", path="/data/s", file_format="parquet", timestamp_field="ts")
    return [entity, source, FeatureView(name="v", entities=[entity], ttl=timedelta(hours=ttl_hours),
                                        schema=[Field(name="x", dtype=Float64)], source=source)]


def test_the_fingerprint_ignores_creation_times_and_sees_an_edit():
    first = definitions_fingerprint(_definitions(24))
    time.sleep(0.01)  # new objects, new meta timestamps
    assert definitions_fingerprint(_definitions(24)) == first
    assert definitions_fingerprint(list(reversed(_definitions(24)))) == first  # order does not matter
    assert definitions_fingerprint(_definitions(48)) != first


_STREAM_VIEW_FINGERPRINT = """
import warnings
from datetime import timedelta
warnings.simplefilter("ignore")
from feast import Entity, Field, PushSource, ValueType
from feast.aggregation import Aggregation
from feast.infra.offline_stores.contrib.spark_offline_store.spark_source import SparkSource
from feast.stream_feature_view import StreamFeatureView
from feast.types import Float64
from features.feast_repo import definitions_fingerprint

entity = Entity(name="e", join_keys=["e_id"], value_type=ValueType.INT64)
batch = SparkSource(name="s", path="/data/s", file_format="parquet", timestamp_field="ts")
push = PushSource(name="p", batch_source=batch)
aggregations = [Aggregation(column="x", function=f, time_window=timedelta(hours=h), name=f"{f}_{h}h")
                for h in (1, 24, 168) for f in ("sum", "max", "min", "mean")]
view = StreamFeatureView(name="w", entities=[entity], source=push, timestamp_field="ts", aggregations=aggregations,
                         schema=[Field(name=a.name, dtype=Float64) for a in aggregations])
print(definitions_fingerprint([entity, batch, push, view]))
"""


def test_a_stream_views_fingerprint_is_the_same_in_every_process():
    """Feast writes a stream feature view's features in set order (``FeatureView.schema``), which
    changes with the process's hash seed: an Airflow task and the CLI would each re-apply the repo."""
    import subprocess
    import sys

    prints = {subprocess.run([sys.executable, "-c", _STREAM_VIEW_FINGERPRINT], env={**os.environ, "PYTHONHASHSEED": seed},
                             capture_output=True, text=True, check=True).stdout.strip() for seed in ("1", "2")}
    assert len(prints) == 1, prints
