"""The driver example's Spark paths on ``local[2]``, a standalone cluster and Spark Connect, side
by side (issue 20 §3): each round runs one fresh process per master, in turn, doing what a user's
job does (apply, offline write, materialization into Redis, a training frame, an online read:
``tests/integration/spark_cluster_job.py``), and reports each step's seconds, median over rounds.

    .venv/bin/python benchmarks/spark_masters.py [--rounds 3] [--days 30 --drivers 200 --trips 3000]

The cluster is one master and one worker (2 cores, executors in their own JVM); the Connect
server runs ``local[2]``: all on this machine, on loopback, so the figures are what the
cluster's machinery costs (JVMs, shipping the project, RPC), not what more machines would win.
Every run must give the same training frame (SHA-256) and online values, or the script fails.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import pandas as pd
import redis as redis_lib

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from examples.driver.datagen import generate
from tests.integration.redis_servers import start_redis
from tests.integration.spark_servers import QUICK_JIT, start_connect, start_standalone

NOW = "2026-12-07T12:00:00+00:00"
STEPS = ("apply", "offline_write", "materialize", "training_frame")


def run_job(master: str, world: Path, folder: Path, redis_url: str, conf: dict[str, str]) -> dict:
    home = folder / "home"
    shutil.rmtree(home, ignore_errors=True)
    shutil.copytree(world, home)
    env = {k: v for k, v in os.environ.items() if k not in {"SPARK_REMOTE", "PYSPARK_PYTHON"}}
    env.update({"TIDEMARK_HOME": str(home), "TIDEMARK_REDIS_URL": redis_url,
                "TIDEMARK_FEAST_REPO": str(ROOT / "examples" / "driver" / "feature_repo"),
                "TIDEMARK_SPARK_MASTER": master, "TIDEMARK_SPARK_CONF": json.dumps(conf), "PYTHONPATH": str(ROOT)})
    started = time.perf_counter()
    done = subprocess.run([sys.executable, "-m", "tests.integration.spark_cluster_job", NOW], cwd=folder, env=env,
                          capture_output=True, text=True, check=False)
    if done.returncode:
        raise SystemExit(f"{master}: the job failed:\n{done.stderr[-3000:]}")
    result = json.loads(done.stdout.strip().splitlines()[-1])
    result["seconds"]["process"] = round(time.perf_counter() - started, 3)
    return result


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--days", type=int, default=30)
    parser.add_argument("--drivers", type=int, default=200)
    parser.add_argument("--customers", type=int, default=2000)
    parser.add_argument("--trips", type=int, default=3000, help="trips per day")
    args = parser.parse_args()
    tmp = Path(tempfile.mkdtemp(prefix="spark-masters-"))
    world = tmp / "world"
    generate(world / "driver_example" / "data", end=pd.Timestamp(NOW).to_pydatetime(), days=args.days,
             drivers=args.drivers, customers=args.customers, trips_per_day=args.trips)
    redis = start_redis(tmp / "redis")
    servers = start_standalone(tmp / "standalone")
    connect = start_connect(tmp / "connect")
    masters = {
        "local[2]": ("local[2]", {}),
        "standalone (1 worker, 2 cores)": (servers[0].url, {
            "spark.driver.host": "127.0.0.1", "spark.executor.memory": "1g", "spark.cores.max": "2",
            "spark.executor.extraJavaOptions": QUICK_JIT}),
        "Spark Connect (server on local[2])": (connect.url, {}),
    }
    seconds: dict[str, list[dict[str, float]]] = {name: [] for name in masters}
    reference: dict | None = None
    try:
        for round_ in range(args.rounds):
            for db, (name, (master, conf)) in enumerate(masters.items(), start=1):
                result = run_job(master, world, tmp / f"run-{db}", f"{redis.url.rsplit('/', 1)[0]}/{db}", conf)
                redis_lib.Redis.from_url(redis.url).flushall()
                check = (result["frame_sha256"], result["online"])
                reference = reference or check
                if check != reference:
                    raise SystemExit(f"{name} gave another frame or other online values than local[2]")
                seconds[name].append(result["seconds"])
                print(f"round {round_ + 1} {name}: {result['seconds']}", flush=True)
    finally:
        connect.stop()
        for server in reversed(servers):
            server.stop()
        redis.stop()
        shutil.rmtree(tmp, ignore_errors=True)
    print(f"\n{args.days} days, {args.drivers} drivers, {args.customers} customers, {args.trips} trips/day; "
          f"median of {args.rounds} rounds, seconds (same frame SHA-256 and online values everywhere)\n")
    cols = (*STEPS, "process")
    print("| master | " + " | ".join(cols) + " |")
    print("| --- |" + " --- |" * len(cols))
    base = {c: statistics.median(r[c] for r in seconds["local[2]"]) for c in cols}
    for name, runs in seconds.items():
        cells = [f"{statistics.median(r[c] for r in runs):.1f}"
                 + ("" if name == "local[2]" else f" ({statistics.median(r[c] for r in runs) / base[c]:.2f}×)")
                 for c in cols]
        print(f"| {name} | " + " | ".join(cells) + " |")


if __name__ == "__main__":
    main()
