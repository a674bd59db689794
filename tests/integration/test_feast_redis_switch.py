"""One Feast repo's ``feature_store.yaml``, run against Feast's ``redis`` store and against tidemark's,
with only the ``type:`` line changed: the same Redis (password-protected, started here), Feast's own
CLI (``feast apply``, ``feast materialize``), and the same online values read back.
"""

from __future__ import annotations

import os
import subprocess
import sys
from collections.abc import Iterator
from datetime import timedelta
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.parquet as pq
import pytest
import redis

from tests.integration.redis_servers import RedisProc, start_redis

pytestmark = pytest.mark.integration

SECRET = "s3cr3t-pw"
CHECKOUT = Path(__file__).resolve().parents[2]
KEY_TTL_S = 86_400
STORE_TYPES = {"feast": "redis", "tidemark": "features.online_store.PackedRedisOnlineStore"}

# Feast's own Redis keys, as a Feast user writes them; only the type line differs between the repos.
YAML = """\
project: switch
provider: local
registry: data/registry.db
entity_key_serialization_version: 3
offline_store:
  type: file
online_store:
  type: {type}
  connection_string: "127.0.0.1:{port},db=0,password={password}"
  redis_type: redis
  key_ttl_seconds: {key_ttl}
"""

DEFINITIONS = """\
from datetime import timedelta

from feast import Entity, FeatureView, Field, FileSource, ValueType
from feast.types import Bool, Float64, Int64, String

account = Entity(name="account", join_keys=["account_id"], value_type=ValueType.INT64)
source = FileSource(path="data/balances.parquet", timestamp_field="event_timestamp")
balances = FeatureView(
    name="balances", entities=[account], ttl=timedelta(0), source=source,
    schema=[Field(name="balance", dtype=Float64), Field(name="txns", dtype=Int64),
            Field(name="tier", dtype=String), Field(name="active", dtype=Bool)])
"""


def _history(now: pd.Timestamp, accounts: int = 40, rows: int = 400) -> pd.DataFrame:
    """Several rows per account over the last two days, so materialize has a newest to pick."""
    rng = np.random.default_rng(19)
    return pd.DataFrame({
        "account_id": rng.integers(0, accounts, rows).astype(np.int64),
        "event_timestamp": now - pd.to_timedelta(rng.permutation(rows) * 400 + 60, unit="s"),
        "balance": rng.normal(100, 30, rows).round(4),
        "txns": rng.integers(0, 50, rows).astype(np.int64),
        "tier": rng.choice(["gold", "silver", "bronze, plus"], rows),
        "active": rng.random(rows) < 0.5,
    })


def _feast(repo: Path, *args: str) -> str:
    """Feast's own CLI on ``repo``, with this checkout importable (the store's ``type:`` path)."""
    env = {**os.environ, "PYTHONPATH": os.pathsep.join(filter(None, [str(CHECKOUT), os.environ.get("PYTHONPATH")]))}
    feast = Path(sys.executable).with_name("feast")
    done = subprocess.run([str(feast), "-c", str(repo), *args], env=env, capture_output=True, text=True,
                          timeout=300, check=False)
    output = done.stdout + done.stderr
    assert done.returncode == 0, f"feast {' '.join(args)} failed:\n{output[-3000:]}"
    return output


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[RedisProc]:
    proc = start_redis(tmp_path_factory.mktemp("redis"), password=SECRET)
    yield proc
    proc.stop()


@pytest.fixture(scope="module")
def repos(server: RedisProc, tmp_path_factory: pytest.TempPathFactory) -> dict[str, Any]:
    """Both repos applied and materialized from the same data, with Feast's CLI."""
    now = pd.Timestamp.now(tz="UTC").floor("s")
    history = _history(now)
    outputs, paths = {}, {}
    for name, store_type in STORE_TYPES.items():
        repo = tmp_path_factory.mktemp(name)
        (repo / "data").mkdir()
        pq.write_table(pa.Table.from_pandas(history, preserve_index=False), repo / "data/balances.parquet",
                       coerce_timestamps="us")
        (repo / "definitions.py").write_text(DEFINITIONS)
        (repo / "feature_store.yaml").write_text(YAML.format(type=store_type, port=server.port, password=SECRET,
                                                              key_ttl=KEY_TTL_S))
        outputs[name] = _feast(repo, "apply") + _feast(
            repo, "materialize", (now - timedelta(days=3)).isoformat(), (now + timedelta(seconds=1)).isoformat())
        paths[name] = repo
    return {"paths": paths, "history": history, "outputs": outputs}


def _online(repo: Path, accounts: list[int]) -> dict[str, list[Any]]:
    from feast import FeatureStore

    store = FeatureStore(repo_path=str(repo))
    features = [f"balances:{f}" for f in ("balance", "txns", "tier", "active")]
    return store.get_online_features(features=features, entity_rows=[{"account_id": a} for a in accounts]).to_dict()


def test_the_same_yaml_gives_the_same_online_values_on_both_stores(repos: dict[str, Any]) -> None:
    history: pd.DataFrame = repos["history"]
    accounts = sorted(int(a) for a in history["account_id"].unique()) + [10_000]  # the last one: never seen
    feast = _online(repos["paths"]["feast"], accounts)
    ours = _online(repos["paths"]["tidemark"], accounts)
    assert ours == feast
    newest = history.sort_values("event_timestamp").groupby("account_id").last()
    assert ours["balance"][:-1] == newest.loc[accounts[:-1], "balance"].tolist()
    assert ours["tier"][:-1] == newest.loc[accounts[:-1], "tier"].tolist()
    assert ours["active"][:-1] == newest.loc[accounts[:-1], "active"].tolist()
    assert (ours["balance"][-1], ours["tier"][-1]) == (None, None)


def test_key_ttl_seconds_bounds_every_key_tidemark_wrote(repos: dict[str, Any], server: RedisProc) -> None:
    """The view has no TTL, so without key_ttl_seconds tidemark's keys would never expire."""
    client = redis.Redis.from_url(server.url)
    ours = [k for k in client.scan_iter(match=b"switch:{*}:balances", count=1000)]
    assert len(ours) == repos["history"]["account_id"].nunique()
    ttls_ms = [client.pttl(k) for k in ours]
    assert all(0 < t <= KEY_TTL_S * 1000 for t in ttls_ms), sorted(ttls_ms)[:3]


def test_the_password_is_in_no_output_of_feasts_commands(repos: dict[str, Any]) -> None:
    for name, output in repos["outputs"].items():
        assert "Materializing" in output or "materializ" in output.lower(), name
        assert SECRET not in output, name
