"""The driver example's Spark paths on a Spark cluster and on Spark Connect give what they give on
``local[2]`` (issue 20 §1): the repo applied, rows appended to the offline store (the partitioned,
committed write), materialization into Redis (executors write to it), a training frame (the
as-of join), the online values read back, drift counted on Spark (equal to pandas' count) and
the fraud example's feature build (its Spark jobs: the driver example has none), each in a process of its own started as a user
starts one, with ``TIDEMARK_SPARK_MASTER`` set to ``local[2]``, ``spark://…`` or ``sc://…``.

The cluster's executors and the Connect server's Python workers run this environment's
interpreter without this checkout on their path: they import tidemark from the zip the driver
ships them. Bounded: a six-day, ten-driver world; one master, one worker, one Connect server.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path
from typing import Any

import pandas as pd
import pytest

from examples.driver.datagen import generate
from tests.integration.redis_servers import RedisProc
from tests.integration.spark_servers import QUICK_JIT, start_connect, start_standalone

pytestmark = pytest.mark.integration

ROOT = Path(__file__).resolve().parents[2]
REPO = ROOT / "examples" / "driver" / "feature_repo"
NOW = "2026-12-07T12:00:00+00:00"


@pytest.fixture(scope="module")
def world(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The example's data, generated once; each run copies it into a home of its own."""
    home = tmp_path_factory.mktemp("spark-world")
    generate(home / "driver_example" / "data", end=pd.Timestamp(NOW).to_pydatetime(), days=6, drivers=10,
             customers=20, trips_per_day=100)
    return home


def run(master: str, world: Path, folder: Path, redis: RedisProc, db: int, conf: dict[str, str] | None = None
        ) -> dict[str, Any]:
    """One process running tests/integration/spark_cluster_job.py against ``master``."""
    home = folder / "home"
    shutil.copytree(world, home)
    env = {k: v for k, v in os.environ.items() if k not in {"SPARK_REMOTE", "PYSPARK_PYTHON"}}
    env.update({"TIDEMARK_HOME": str(home), "TIDEMARK_REDIS_URL": f"{redis.url.rsplit('/', 1)[0]}/{db}",
                "TIDEMARK_FEAST_REPO": str(REPO), "TIDEMARK_SPARK_MASTER": master,
                "TIDEMARK_SPARK_CONF": json.dumps(conf or {}), "PYTHONPATH": str(ROOT)})
    done = subprocess.run([sys.executable, "-m", "tests.integration.spark_cluster_job", NOW], cwd=folder, env=env,
                          capture_output=True, text=True, timeout=400, check=False)
    assert done.returncode == 0, done.stderr[-4000:]
    return json.loads(done.stdout.strip().splitlines()[-1])


@pytest.fixture(scope="module")
def on_local(world: Path, tmp_path_factory: pytest.TempPathFactory, module_redis: RedisProc) -> dict[str, Any]:
    return run("local[2]", world, tmp_path_factory.mktemp("on-local"), module_redis, 1)


def _same(result: dict[str, Any], expected: dict[str, Any]) -> None:
    assert result["frame_rows"] == expected["frame_rows"] == 12
    assert result["frame_sha256"] == expected["frame_sha256"]
    assert result["online"] == expected["online"]
    assert {row["conv_rate"] for row in result["online"] if row["driver_id"] in (1001, 1002)} == {1.0}  # the appended rows
    assert result["drift"] == expected["drift"] and result["drift_as_pandas"], result["drift"]
    assert any(column["drifted"] for column in result["drift"]["columns"]), result["drift"]  # the shift is seen
    assert result["fraud_build"] == expected["fraud_build"] and all(rows for rows, _ in result["fraud_build"].values())


def test_a_standalone_cluster_gives_what_local_gives(world: Path, tmp_path_factory: pytest.TempPathFactory,
                                                    module_redis: RedisProc, on_local: dict[str, Any]) -> None:
    folder = tmp_path_factory.mktemp("standalone")
    servers = start_standalone(folder / "spark")
    try:
        result = run(servers[0].url, world, folder, module_redis, 2,
                     {"spark.driver.host": "127.0.0.1", "spark.executor.memory": "1g", "spark.cores.max": "2",
                      "spark.executor.extraJavaOptions": QUICK_JIT})
    finally:
        for server in reversed(servers):
            server.stop()
    assert not result["local"] and not result["connect"]
    _same(result, on_local)
    executor_logs = "".join(p.read_text(errors="replace") for p in (folder / "spark" / "work").rglob("stderr"))
    assert "tidemark-packages-" in executor_logs  # the executors got the project from the driver


def test_spark_connect_gives_what_local_gives(world: Path, tmp_path_factory: pytest.TempPathFactory,
                                             module_redis: RedisProc, on_local: dict[str, Any]) -> None:
    folder = tmp_path_factory.mktemp("connect")
    server = start_connect(folder / "spark")
    try:
        result = run(server.url, world, folder, module_redis, 3)
    finally:
        server.stop()
    assert result["connect"] and not result["local"]
    _same(result, on_local)
