"""``feast materialize`` through tidemark's batch engine against Feast's default (``local``) engine.

Two Feast repos over the same generated Parquet rows and one redis-server (started here on a free
loopback port): both use tidemark's offline and packed online stores, and differ only in
``batch_engine``. Each timed run is Feast's own CLI in a fresh process, as a team's script runs it
(``feast -c REPO materialize START END``), so the time includes the interpreter, Feast's imports
and Spark's start-up for both. The runs alternate between the engines (load from other processes
hits both alike); the table shows medians and the ratio. A check afterwards reads every entity back
from both projects and requires equal values.

    .venv/bin/python benchmarks/feast_materialize.py                       # 20k entities, 200k rows, 3 repeats
    .venv/bin/python benchmarks/feast_materialize.py --entities 2000 --rows 20000 --repeats 1   # smoke
"""

from __future__ import annotations

import argparse
import os
import statistics
import subprocess
import sys
import tempfile
import time
from datetime import UTC, datetime, timedelta
from pathlib import Path

import numpy as np
import pandas as pd

ROOT = Path(__file__).resolve().parents[1]
ENGINES = {"tidemark": "features.materialize_engine.TidemarkSparkEngine", "feast-local": "local"}
FEATURES = 8


def write_data(folder: Path, entities: int, rows: int, now: datetime) -> None:
    """``rows`` events of ``entities`` customers over the last 2 days, ``FEATURES`` float64 features."""
    rng = np.random.default_rng(7)
    ev = pd.Timestamp(now) - pd.to_timedelta(rng.integers(60, 2 * 86_400, rows), unit="s")
    frame = pd.DataFrame({"entity_id": rng.integers(0, entities, rows).astype(np.int64), "event_timestamp": ev,
                          "created": ev + pd.Timedelta(seconds=5)})
    for i in range(FEATURES):
        frame[f"f{i}"] = rng.normal(0, 1, rows)
    folder.mkdir(parents=True, exist_ok=True)
    frame.to_parquet(folder / "part-0.parquet", coerce_timestamps="us", allow_truncated_timestamps=True)


def write_repo(repo: Path, data: Path, url: str, engine: str) -> Path:
    repo.mkdir(parents=True, exist_ok=True)
    (repo / "feature_store.yaml").write_text(
        f"project: bench_{engine.replace('-', '_')}\nprovider: local\nregistry: {repo / 'registry.db'}\n"
        "offline_store:\n  type: features.offline_store.SparkAsofOfflineStore\n"
        "  spark_conf: {spark.master: 'local[2]', spark.driver.memory: 2g, spark.sql.shuffle.partitions: '4'}\n"
        f"online_store:\n  type: features.online_store.PackedRedisOnlineStore\n  url: {url}\n"
        f"batch_engine:\n  type: {ENGINES[engine]}\n" + ("  progress: false\n" if engine == "tidemark" else "")
        + "entity_key_serialization_version: 3\n")
    fields = ", ".join(f"Field(name='f{i}', dtype=Float64)" for i in range(FEATURES))
    (repo / "definitions.py").write_text(
        "from datetime import timedelta\n\n"
        "from feast import Entity, FeatureView, Field, ValueType\n"
        "from feast.infra.offline_stores.contrib.spark_offline_store.spark_source import SparkSource\n"
        "from feast.types import Float64, Int64\n\n"
        "entity = Entity(name='entity', join_keys=['entity_id'], value_type=ValueType.INT64)\n"
        f"stats = FeatureView(name='stats', entities=[entity], ttl=timedelta(days=3),\n"
        f"    schema=[Field(name='entity_id', dtype=Int64), {fields}],\n"
        f"    source=SparkSource(name='stats_src', path={str(data)!r}, file_format='parquet',\n"
        "        timestamp_field='event_timestamp', created_timestamp_column='created'))\n")
    return repo


def feast(repo: Path, *args: str) -> float:
    """Seconds that Feast's CLI took for ``args`` in a fresh process."""
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(ROOT), os.environ.get("PYTHONPATH", "")])}
    started = time.perf_counter()
    done = subprocess.run([str(Path(sys.executable).parent / "feast"), "-c", str(repo), *args],
                          capture_output=True, text=True, env=env, check=False)
    seconds = time.perf_counter() - started
    if done.returncode:
        sys.exit(f"feast {' '.join(args)} failed in {repo}:\n{done.stdout[-2000:]}{done.stderr[-3000:]}")
    return seconds


def same_values(repos: dict[str, Path], entities: int) -> bool:
    from feast import FeatureStore

    rows = [{"entity_id": i} for i in range(entities)]
    frames = [FeatureStore(repo_path=str(r)).get_online_features([f"stats:f{i}" for i in range(FEATURES)], rows)
              .to_df().sort_values("entity_id").reset_index(drop=True) for r in repos.values()]
    return bool(frames[0].equals(frames[1]))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--entities", type=int, default=20_000)
    parser.add_argument("--rows", type=int, default=200_000)
    parser.add_argument("--repeats", type=int, default=3)
    args = parser.parse_args()
    sys.path.insert(0, str(ROOT))
    from features.embedded_redis import EmbeddedRedis

    with tempfile.TemporaryDirectory(prefix="feast-materialize-") as tmp:
        work = Path(tmp)
        redis = EmbeddedRedis(work / "redis")
        url = redis.ensure_running()
        try:
            now = datetime.now(UTC).replace(microsecond=0)
            write_data(work / "data", args.entities, args.rows, now)
            repos = {name: write_repo(work / name, work / "data", url, name) for name in ENGINES}
            for repo in repos.values():
                feast(repo, "apply")
            start, end = (now - timedelta(days=7)).isoformat(), now.isoformat()
            times: dict[str, list[float]] = {name: [] for name in repos}
            for _ in range(args.repeats):
                for name, repo in repos.items():  # alternating: shared load hits both alike
                    times[name].append(feast(repo, "materialize", start, end))
            equal = same_values(repos, args.entities)
        finally:
            redis.stop()
    medians = {name: statistics.median(t) for name, t in times.items()}
    print(f"feast materialize, {args.entities:,} entities, {args.rows:,} rows, {FEATURES} float64 features, "
          f"{args.repeats} runs each (fresh `feast` process per run; includes start-up)")
    print(f"{'engine':<12} {'median s':>9} {'min s':>7} {'max s':>7}")
    for name, t in times.items():
        print(f"{name:<12} {medians[name]:>9.2f} {min(t):>7.2f} {max(t):>7.2f}")
    print(f"ratio feast-local / tidemark: {medians['feast-local'] / medians['tidemark']:.2f}x")
    print(f"{'PASS' if equal else 'FAIL'}: both engines leave the same online values")
    if not equal:
        sys.exit(1)


if __name__ == "__main__":
    main()
