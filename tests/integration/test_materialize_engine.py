"""``feast materialize`` / ``materialize-incremental`` through tidemark's batch engine, run as Feast's
own CLI in a subprocess against a real Redis, compared with tidemark's own materialization."""

from __future__ import annotations

import os
import subprocess
import sys
from datetime import timedelta
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import redis

from features.errors import ConfigError
from features.materialize import Window, materialize_views
from tests.integration.online_repo import definitions, make_history, open_repo

pytestmark = pytest.mark.integration

ROOT = Path(__file__).resolve().parents[2]
FEATURES = ["cust_stats:amount", "cust_stats:count", "cust_profile:country", "cust_profile:vip",
            "cust_profile:income"]
ENGINE = "features.materialize_engine.TidemarkSparkEngine"


def write_repo(repo: Path, data: Path, url: str, *, engine: str | None = ENGINE, project: str = "engine_t") -> Path:
    """A Feast repo on disk (feature_store.yaml + definitions.py) over ``data``, as a team has one."""
    repo.mkdir(parents=True, exist_ok=True)
    batch_engine = f"batch_engine:\n  type: {engine}\n  progress: false\n" if engine else ""
    (repo / "feature_store.yaml").write_text(
        f"project: {project}\nprovider: local\nregistry: {repo / 'registry.db'}\n"
        "offline_store:\n  type: features.offline_store.SparkAsofOfflineStore\n"
        "  spark_conf: {spark.master: 'local[2]', spark.driver.memory: 1g, spark.sql.shuffle.partitions: '4'}\n"
        f"online_store:\n  type: features.online_store.PackedRedisOnlineStore\n  url: {url}\n"
        f"{batch_engine}entity_key_serialization_version: 3\n")
    (repo / "definitions.py").write_text(
        "from pathlib import Path\n\nfrom tests.integration.online_repo import definitions\n\n"
        f"customer, cust_stats, cust_profile = definitions(Path({str(data)!r}))\n")
    return repo


def feast(repo: Path, *args: str) -> str:
    """Feast's own CLI (the console script of this environment), as a team's script runs it."""
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(ROOT), os.environ.get("PYTHONPATH", "")])}
    done = subprocess.run([str(Path(sys.executable).parent / "feast"), "-c", str(repo), *args],
                          capture_output=True, text=True, env=env, timeout=300, check=False)
    assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-3000:]
    return done.stdout + done.stderr


def values(url: str, project: str) -> dict[bytes, bytes]:
    """Every stored value of ``project``, raw: what the online store holds, byte for byte."""
    client = redis.Redis.from_url(url)
    return {k: client.get(k) for k in client.scan_iter(match=project.encode() + b":{*")}


def online(store, customers) -> pd.DataFrame:
    rows = [{"customer_id": int(c)} for c in customers]
    return store.get_online_features(features=FEATURES, entity_rows=rows).to_df().set_index("customer_id")


@pytest.fixture(scope="module")
def history(tmp_path_factory, spark):
    root = tmp_path_factory.mktemp("engine")
    return root, make_history(root / "data")


def test_feast_cli_through_the_engine_equals_tidemarks_own_and_reruns_change_nothing(history, redis_url, spark):
    from feast import FeatureStore

    root, now = history
    repo = write_repo(root / "repo", root / "data", redis_url)
    feast(repo, "apply")
    start, middle = now - timedelta(days=60), now - timedelta(days=1)
    # the first window as a team's script runs it (FeatureStore.materialize, this process: the
    # same engine), the rest by Feast's own command in a fresh process (one JVM start, ~30 s)
    FeatureStore(repo_path=str(repo)).materialize(start_date=start.to_pydatetime(), end_date=middle.to_pydatetime())
    out = feast(repo, "materialize-incremental", now.isoformat())
    assert "cust_stats" in out and "cust_profile" in out

    # tidemark's own materialization of the same data and interval, into another project
    own = open_repo(root / "data", redis_url, project="engine_own")
    own.apply(definitions(root / "data"))
    materialize_views(spark, own, [(own.get_feature_view(n), Window(start.to_pydatetime(), now.to_pydatetime()))
                                   for n in ("cust_stats", "cust_profile")], progress=False)
    store = FeatureStore(repo_path=str(repo))
    customers = np.arange(-3, 305)
    got, want = online(store, customers), online(own, customers)
    assert got["amount"].notna().sum() > 50 and got["country"].notna().sum() > 50
    pd.testing.assert_frame_equal(got, want)

    # Feast kept its own bookkeeping: the incremental run was recorded up to `now`
    fv = store.get_feature_view("cust_stats")
    assert pd.Timestamp(fv.most_recent_end_time) == now

    # idempotent: not a byte changed by running both again (in this process, as a team's script
    # calls FeatureStore.materialize*: the same engine, without two more JVM start-ups)
    before = values(redis_url, "engine_t")
    assert len(before) > 100
    store.materialize(start_date=start.to_pydatetime(), end_date=now.to_pydatetime())
    store.materialize_incremental(end_date=now.to_pydatetime())
    assert values(redis_url, "engine_t") == before


def test_the_incremental_run_takes_rows_that_arrived_late(redis_url, spark, tmp_path):
    """A row whose event time is before the last run's end but which arrived after it reaches the
    online store on the next incremental run (Feast's default engine would never move it)."""
    from feast import FeatureStore

    data = tmp_path / "data"
    now = make_history(data)
    repo = write_repo(tmp_path / "repo", data, redis_url, project="engine_late")
    store = FeatureStore(repo_path=str(repo))  # in process; the Feast CLI's path is the test above
    store.apply(definitions(data))
    first = now - timedelta(hours=2)
    store.materialize(start_date=(now - timedelta(days=5)).to_pydatetime(), end_date=first.to_pydatetime())
    late = pd.DataFrame({"customer_id": [10_000], "event_timestamp": [first - timedelta(minutes=10)],
                         "created": [first + timedelta(minutes=30)], "amount": [123.5], "count": [1]})
    late.to_parquet(data / "stats" / "part-late.parquet", coerce_timestamps="us", allow_truncated_timestamps=True)
    assert pd.isna(online(store, [10_000]).loc[10_000, "amount"])  # not there yet
    store.materialize_incremental(end_date=now.to_pydatetime())
    assert online(store, [10_000]).loc[10_000, "amount"] == 123.5


def test_an_online_store_the_engine_cannot_write_is_refused_by_name(history, tmp_path, spark):
    from feast import FeatureStore
    from feast.repo_config import RepoConfig

    root, now = history
    config = RepoConfig(
        project="engine_refused", provider="local", registry=str(tmp_path / "registry.db"),
        offline_store={"type": "features.offline_store.SparkAsofOfflineStore"},
        online_store={"type": "sqlite", "path": str(tmp_path / "online.db")},
        batch_engine={"type": ENGINE}, entity_key_serialization_version=3, repo_path=str(tmp_path))
    store = FeatureStore(config=config)
    store.apply(definitions(root / "data"))
    with pytest.raises(ConfigError, match="online_store is 'sqlite'.*remove the batch_engine"):
        store.materialize(start_date=(now - timedelta(days=2)).to_pydatetime(), end_date=now.to_pydatetime())
