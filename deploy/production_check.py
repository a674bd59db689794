"""The README's production set-up, followed on one machine in a fresh temporary directory, and the
loop run through it on the driver example (issue 20 §3).

    .venv/bin/python deploy/production_check.py [--postgres postgresql://postgres@127.0.0.1:5432] [--keep]

Brings up, each as its own process on loopback: a Spark standalone master and worker (from the
pyspark wheel), a Redis, an MLflow tracking server on a fresh PostgreSQL database with proxied
artifacts, and Airflow on another fresh PostgreSQL database (scheduler with LocalExecutor, DAG
processor, API server; the environment of ``tidemark airflow env`` with ``TIDEMARK_AIRFLOW_DB``,
plus the shared JWT secret and Fernet key the README asks for). Then, with
``TIDEMARK_SPARK_MASTER``, ``TIDEMARK_SPARK_CONF``, ``TIDEMARK_REDIS_URL`` and
``MLFLOW_TRACKING_URI`` pointing at them, runs the commands of ``examples/driver/README.md``:
datagen, ``feast apply``, ``tidemark features materialize``, ``train``, ``promote --first``,
``serve`` with a few HTTP predictions, and a scheduled ``feature_pipeline`` run by the real
scheduler. Prints each step's seconds and PASS/FAIL (with the reason), then stops every process
and drops both databases, failed or not. Exit status 0 only when every step passed.

Not part of ``make test``: it takes minutes. See ``docs/production.md`` for what it proves.
"""

from __future__ import annotations

import argparse
import json
import os
import re
import secrets
import shutil
import signal
import subprocess
import sys
import tempfile
import time
import urllib.error
import urllib.request
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

import psycopg
import redis as redis_lib
from cryptography.fernet import Fernet

from pipelines.cli_airflow import airflow_env
from tests.integration.redis_servers import RedisProc, free_port, start_redis
from tests.integration.spark_servers import QUICK_JIT, SparkProc, start_standalone
from tidemark.processes import stop_group
from tidemark.settings import Settings

REPO = ROOT / "examples" / "driver" / "feature_repo"
MODEL = "driver-completion"
VIEWS = ("customer_daily_profile", "driver_hourly_stats")
BIN = Path(sys.executable).parent
POSTGRES = os.environ.get("TIDEMARK_TEST_POSTGRES", "postgresql://postgres@127.0.0.1:5432")


class StepFailed(Exception):
    """A step's check did not hold; the message says what was seen."""


@dataclass
class Step:
    name: str
    seconds: float = 0.0
    ok: bool = False
    note: str = ""


@dataclass
class World:
    """Everything started, so that teardown finds it; and the environment the commands run with."""

    folder: Path
    postgres: str
    env: dict[str, str] = field(default_factory=dict)
    databases: list[str] = field(default_factory=list)
    groups: list[tuple[str, subprocess.Popen[bytes]]] = field(default_factory=list)  # own process groups
    spark: list[SparkProc] = field(default_factory=list)
    redis: RedisProc | None = None
    mlflow_url: str = ""
    airflow_db: str = ""
    api_port: int = 0
    steps: list[Step] = field(default_factory=list)

    @property
    def home(self) -> Path:
        return self.folder / "home"

    @property
    def logs(self) -> Path:
        return self.folder / "logs"


# --- processes -------------------------------------------------------------------------------

def _spawn(world: World, name: str, args: list[str], env: dict[str, str]) -> subprocess.Popen[bytes]:
    """A long-running process in its own group (its workers stop with it), logging to logs/NAME.log."""
    with open(world.logs / f"{name}.log", "wb") as log:
        proc = subprocess.Popen(args, cwd=world.folder, env=env, stdout=log, stderr=subprocess.STDOUT,
                                stdin=subprocess.DEVNULL, start_new_session=True)
    world.groups.append((name, proc))
    return proc


def _tail(path: Path, chars: int = 1500) -> str:
    return path.read_text(errors="replace")[-chars:] if path.exists() else f"({path} not written)"


def run_command(world: World, name: str, args: list[str], timeout_s: float) -> str:
    """Run one user command in the fresh directory with the production environment; its stdout."""
    log = world.logs / f"{name}.log"
    with open(log, "wb") as out:
        proc = subprocess.Popen(args, cwd=world.folder, env=world.env, stdout=subprocess.PIPE, stderr=out,
                                stdin=subprocess.DEVNULL, start_new_session=True)
        try:
            stdout, _ = proc.communicate(timeout=timeout_s)
        except subprocess.TimeoutExpired:
            stop_group(proc, 5)
            raise StepFailed(f"`{' '.join(args[:4])}…` still running after {timeout_s:.0f} s; "
                             f"stderr ends:\n{_tail(log)}") from None
    text = stdout.decode(errors="replace")
    with open(log, "a") as out:
        out.write(f"\n--- stdout\n{text}")
    if proc.returncode:
        raise StepFailed(f"`{' '.join(args[:4])}…` exited {proc.returncode}; stderr ends:\n{_tail(log)}")
    return text


def wait_for(what: str, probe: Callable[[], Any], timeout_s: float, poll_s: float = 1.0,
             died: subprocess.Popen[bytes] | None = None, log: Path | None = None) -> Any:
    """Poll until ``probe`` returns something truthy; StepFailed after ``timeout_s`` seconds."""
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        found = probe()
        if found:
            return found
        if died is not None and died.poll() is not None:
            raise StepFailed(f"{what}: the process exited {died.returncode}; its log ends:\n"
                             f"{_tail(log) if log else ''}")
        time.sleep(poll_s)
    raise StepFailed(f"{what}: not within {timeout_s:.0f} s" + (f"; its log ends:\n{_tail(log)}" if log else ""))


def http_status(url: str, body: dict[str, Any] | None = None) -> tuple[int, Any]:
    """(status, parsed JSON body or text); status 0 when nothing answers."""
    data = json.dumps(body).encode() if body is not None else None
    request = urllib.request.Request(url, data=data, headers={"content-type": "application/json"})
    try:
        with urllib.request.urlopen(request, timeout=10) as answer:
            raw = answer.read().decode()
            status = answer.status
    except urllib.error.HTTPError as exc:
        raw, status = exc.read().decode(errors="replace"), exc.code
    except (urllib.error.URLError, OSError):
        return 0, None
    try:
        return status, json.loads(raw)
    except ValueError:
        return status, raw


# --- the parts -------------------------------------------------------------------------------

def create_databases(world: World) -> None:
    with psycopg.connect(f"{world.postgres}/postgres", autocommit=True, connect_timeout=5) as admin:
        for role in ("mlflow", "airflow"):
            name = f"tidemark_prod_{role}_{secrets.token_hex(4)}"
            admin.execute(f'CREATE DATABASE "{name}"')
            world.databases.append(name)
    world.airflow_db = f"{world.postgres}/{world.databases[1]}"


def drop_databases(world: World) -> None:
    with psycopg.connect(f"{world.postgres}/postgres", autocommit=True, connect_timeout=5) as admin:
        for name in world.databases:
            admin.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')


def start_spark(world: World) -> None:
    world.spark = start_standalone(world.folder / "spark", cores=2, memory="2g")


def start_online_store(world: World) -> None:
    world.redis = start_redis(world.folder / "redis")


def start_mlflow(world: World) -> None:
    """``mlflow server`` on PostgreSQL, artifacts proxied by the server into one folder."""
    port = free_port()
    _, _, rest = world.postgres.partition("://")
    args = [str(BIN / "mlflow"), "server", "--backend-store-uri", f"postgresql+psycopg://{rest}/{world.databases[0]}",
            "--artifacts-destination", str(world.folder / "mlartifacts"), "--workers", "1",
            "--host", "127.0.0.1", "--port", str(port)]
    proc = _spawn(world, "mlflow-server", args, {**os.environ, "PYTHONPATH": ""})
    world.mlflow_url = f"http://127.0.0.1:{port}"
    wait_for("the MLflow server's /health", lambda: http_status(f"{world.mlflow_url}/health")[0] == 200, 180,
             died=proc, log=world.logs / "mlflow-server.log")


def production_env(world: World) -> None:
    """The variables the README's Settings table and production paragraphs name, and Airflow's."""
    assert world.redis is not None
    conf = {"spark.driver.host": "127.0.0.1", "spark.executor.memory": "1g", "spark.cores.max": "2",
            "spark.executor.extraJavaOptions": QUICK_JIT, "spark.pyspark.python": sys.executable}
    tidemark = {"TIDEMARK_HOME": str(world.home), "TIDEMARK_FEAST_REPO": str(REPO),
                "TIDEMARK_SPARK_MASTER": world.spark[0].url, "TIDEMARK_SPARK_CONF": json.dumps(conf),
                "TIDEMARK_SPARK_DRIVER_MEMORY": "1g", "TIDEMARK_SPARK_SHUFFLE_PARTITIONS": "4",
                "TIDEMARK_REDIS_URL": world.redis.url, "MLFLOW_TRACKING_URI": world.mlflow_url,
                "TIDEMARK_AIRFLOW_DB": world.airflow_db}
    base = {k: v for k, v in os.environ.items() if k not in {"SPARK_REMOTE", "PYSPARK_PYTHON", "MASTER"}
            and not k.startswith(("TIDEMARK_", "MLFLOW_", "AIRFLOW"))}
    world.api_port = free_port()
    world.env = {**base, **tidemark, "PYTHONPATH": str(ROOT),  # "the project installed" on every worker
                 **airflow_env(Settings.from_env(tidemark), port=world.api_port)}
    world.env.update({
        "AIRFLOW__CORE__EXECUTOR": "LocalExecutor",
        "AIRFLOW__CORE__PARALLELISM": "2",
        "AIRFLOW__API_AUTH__JWT_SECRET": secrets.token_urlsafe(32),  # the scheduler signs, the API server checks
        "AIRFLOW__CORE__FERNET_KEY": Fernet.generate_key().decode(),
        "AIRFLOW__API__WORKERS": "1",
        "AIRFLOW__DAG_PROCESSOR__REFRESH_INTERVAL": "5",
        "AIRFLOW__SCHEDULER__SCHEDULER_HEARTBEAT_SEC": "2",
    })
    if not world.env["AIRFLOW__DATABASE__SQL_ALCHEMY_CONN"].startswith("postgresql+psycopg://"):
        raise StepFailed(f"tidemark airflow env gave {world.env['AIRFLOW__DATABASE__SQL_ALCHEMY_CONN']!r}")


def airflow_query(world: World, sql: str, *args: Any) -> list[tuple[Any, ...]]:
    with psycopg.connect(world.airflow_db) as conn:
        return list(conn.execute(sql, args).fetchall())  # type: ignore[arg-type]  # literal SQL


def start_airflow(world: World) -> None:
    run_command(world, "airflow-db-migrate", [str(BIN / "airflow"), "db", "migrate"], 300)
    procs = {name: _spawn(world, f"airflow-{name}", [str(BIN / "airflow"), name], world.env)
             for name in ("scheduler", "dag-processor", "api-server")}
    health = f"http://127.0.0.1:{world.api_port}/api/v2/monitor/health"
    wait_for("the Airflow API server's health", lambda: http_status(health)[0] == 200, 180,
             died=procs["api-server"], log=world.logs / "airflow-api-server.log")
    wait_for("the DAG processor storing feature_pipeline",
             lambda: airflow_query(world, "SELECT 1 FROM dag WHERE dag_id = 'feature_pipeline'"), 240,
             died=procs["dag-processor"], log=world.logs / "airflow-dag-processor.log")


# --- the loop --------------------------------------------------------------------------------

def tidemark(world: World, name: str, *args: str, timeout_s: float = 600) -> str:
    return run_command(world, name, [str(BIN / "python"), "-m", "pipelines.cli", "--repo", str(REPO), *args],
                       timeout_s)


def apps_on_master(world: World) -> int:
    """Applications the standalone master has registered so far (from its log)."""
    return world.spark[0].log_path.read_text(errors="replace").count("Registering app ")


def on_the_cluster(world: World, before: int, what: str) -> None:
    if apps_on_master(world) <= before:
        raise StepFailed(f"{what} registered no application with {world.spark[0].url}: it did not run on the cluster")


def datagen(world: World) -> None:
    run_command(world, "datagen", [str(BIN / "python"), "-m", "examples.driver.datagen", "--home", str(world.home)],
                300)


def apply(world: World) -> None:
    run_command(world, "feast-apply", [str(BIN / "feast"), "-c", str(REPO), "apply"], 300)


def materialize(world: World) -> None:
    before = apps_on_master(world)
    out = tidemark(world, "materialize", "features", "materialize")
    on_the_cluster(world, before, "materialize")
    # after the scheduled run's day, the hourly view has the hours since that day's end to load
    written = re.search(r"^driver_hourly_stats .*?: (\d+) written", out, re.MULTILINE)
    if written is None or int(written.group(1)) == 0:
        raise StepFailed(f"materialize wrote no driver_hourly_stats rows:\n{out[-1500:]}")
    assert world.redis is not None
    if not redis_lib.Redis.from_url(world.redis.url).dbsize():
        raise StepFailed(f"nothing in the online store at {world.redis.url}")


def train(world: World) -> None:
    before = apps_on_master(world)
    out = tidemark(world, "train", "train", "--model", MODEL)
    if f"registered {MODEL} v1" not in out:
        raise StepFailed(f"train did not report a registered version:\n{out[-1500:]}")
    on_the_cluster(world, before, "train")
    artifacts = [p for p in (world.folder / "mlartifacts").rglob("*") if p.is_file()]
    if not artifacts:
        raise StepFailed("no artifact reached the MLflow server's --artifacts-destination")
    if (world.folder / "mlruns").exists() or (world.home / "mlartifacts").exists():
        raise StepFailed("artifacts were written locally, not through the MLflow server")


def promote(world: World) -> None:
    tidemark(world, "promote", "promote", "--model", MODEL, "--first")


def serve(world: World) -> None:
    port = free_port()
    args = [str(BIN / "python"), "-m", "pipelines.cli", "--repo", str(REPO), "serve", "--model", MODEL,
            "--port", str(port), "--workers", "1"]
    proc = _spawn(world, "serve", args, world.env)
    base = f"http://127.0.0.1:{port}"
    try:
        wait_for("tidemark serve's /readyz", lambda: http_status(f"{base}/readyz")[0] == 200, 180, died=proc,
                 log=world.logs / "serve.log")
        rows = [{"driver_id": 1001 + i, "customer_id": 201 + i, "trip_distance_km": 2.0 + i, "trip_id": 9_000_000 + i}
                for i in range(5)]
        status, answer = 0, None
        for _ in range(50):  # a 503 (the online read's breaker on a starved host) is asked again
            status, answer = http_status(f"{base}/v1/models/{MODEL}/predict", {"rows": rows})
            if status != 503:
                break
            time.sleep(0.2)
        if status != 200 or not isinstance(answer, dict):
            raise StepFailed(f"predict answered {status}: {str(answer)[:500]}")
        scores = [p.get("score") for p in answer["predictions"]]
        if len(scores) != len(rows) or not all(isinstance(s, float) and 0.0 <= s <= 1.0 for s in scores):
            raise StepFailed(f"predictions are not {len(rows)} scores in [0, 1]: {answer}")
    finally:
        stop_group(proc)
        world.groups = [(n, p) for n, p in world.groups if p is not proc]


def scheduled_feature_pipeline(world: World) -> None:
    before = apps_on_master(world)
    run_command(world, "airflow-unpause", [str(BIN / "airflow"), "dags", "unpause", "feature_pipeline"], 120)

    def finished() -> tuple[Any, ...] | None:
        rows = airflow_query(world, "SELECT run_id, run_type, state FROM dag_run WHERE dag_id = 'feature_pipeline'")
        return rows[0] if rows and rows[0][2] in ("success", "failed") else None

    run_id, run_type, state = wait_for("a feature_pipeline run finished by the scheduler", finished, 480, poll_s=2)
    tasks = dict(airflow_query(world, "SELECT task_id, state FROM task_instance WHERE dag_id = 'feature_pipeline' "
                                      "AND run_id = %s", run_id))
    if (run_type, state) != ("scheduled", "success"):
        task_logs = sorted(Path(world.env["AIRFLOW_HOME"], "logs").rglob("*.log"))
        raise StepFailed(f"run {run_id}: {run_type} {state}, tasks {tasks}; last task log ends:\n"
                         f"{_tail(task_logs[-1]) if task_logs else '(none)'}")
    on_the_cluster(world, before, "feature_pipeline's tasks")
    events = airflow_query(world, "SELECT a.uri, e.extra FROM asset_event e JOIN asset a ON a.id = e.asset_id "
                                  "WHERE e.source_dag_id = 'feature_pipeline' AND e.source_run_id = %s", run_id)
    written = {uri: extra.get("rows_written", 0) for uri, extra in events}
    if set(written) != {f"tidemark://features/{view}" for view in VIEWS} or not all(written.values()):
        raise StepFailed(f"run {run_id} published {written}: not every view's Asset with rows written")


# --- driver ----------------------------------------------------------------------------------

#: (name, function, the steps it needs)
STEPS: list[tuple[str, Callable[[World], None], tuple[str, ...]]] = [
    ("postgres databases", create_databases, ()),
    ("spark master + worker", start_spark, ()),
    ("redis", start_online_store, ()),
    ("mlflow server (postgres)", start_mlflow, ("postgres databases",)),
    ("production env", production_env, ("spark master + worker", "redis", "mlflow server (postgres)")),
    ("airflow (postgres) up", start_airflow, ("production env",)),
    ("datagen", datagen, ("production env",)),
    ("feast apply", apply, ("datagen",)),
    # the schedule loads the last whole day first; the command then loads from where it ended up to now
    ("scheduled feature_pipeline", scheduled_feature_pipeline, ("airflow (postgres) up", "feast apply")),
    ("materialize (cluster)", materialize, ("feast apply",)),
    ("train + register", train, ("materialize (cluster)",)),
    ("promote --first", promote, ("train + register",)),
    ("serve + 5 predictions", serve, ("promote --first",)),
]


def run_steps(world: World) -> None:
    passed: set[str] = set()
    for name, fn, needs in STEPS:
        step = Step(name)
        world.steps.append(step)
        missing = [n for n in needs if n not in passed]
        if missing:
            step.note = f"not run: {', '.join(missing)} failed"
            continue
        print(f"[{time.strftime('%H:%M:%S')}] {name} …", flush=True)
        started = time.perf_counter()
        try:
            fn(world)
            step.ok = True
            passed.add(name)
        except Exception as exc:  # noqa: BLE001  every failure is a FAIL row with its reason, never a silent skip
            step.note = f"{type(exc).__name__}: {exc}"
        step.seconds = time.perf_counter() - started


def teardown(world: World) -> list[str]:
    """Stop everything and drop the databases; the problems met (teardown never raises)."""
    problems: list[str] = []
    for name, proc in reversed(world.groups):
        try:
            stop_group(proc)
        except Exception as exc:  # noqa: BLE001  teardown goes on whatever one part does
            problems.append(f"stopping {name}: {exc}")
    for server in reversed(world.spark):
        server.stop()
    if world.redis is not None:
        world.redis.stop()
    if world.databases:
        try:
            drop_databases(world)
        except Exception as exc:  # noqa: BLE001  teardown goes on whatever one part does
            problems.append(f"dropping {world.databases}: {exc}")
    return problems


def report(world: World, total_s: float) -> bool:
    width = max(len(s.name) for s in world.steps)
    print(f"\n{'step':<{width}}  {'seconds':>8}  result")
    for s in world.steps:
        print(f"{s.name:<{width}}  {s.seconds:>8.1f}  {'PASS' if s.ok else 'FAIL'}")
    print(f"{'total':<{width}}  {total_s:>8.1f}")
    failed = [s for s in world.steps if not s.ok]
    for s in failed:
        print(f"\nFAIL {s.name}: {s.note}")
    return not failed and len(world.steps) == len(STEPS)


@contextmanager
def fresh_directory(keep: bool) -> Iterator[Path]:
    folder = Path(tempfile.mkdtemp(prefix="tidemark-production-"))
    try:
        yield folder
    finally:
        if keep:
            print(f"kept {folder}")
        else:
            shutil.rmtree(folder, ignore_errors=True)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--postgres", default=POSTGRES, help="a PostgreSQL server URL whose user may CREATE DATABASE")
    parser.add_argument("--keep", action="store_true", help="keep the temporary directory (logs, data)")
    args = parser.parse_args()
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(143))  # so that teardown runs
    began = time.perf_counter()
    with fresh_directory(args.keep) as folder:
        world = World(folder=folder, postgres=args.postgres.rstrip("/"))
        world.logs.mkdir()
        print(f"fresh directory {folder}", flush=True)
        try:
            run_steps(world)
        finally:
            problems = teardown(world)
        ok = report(world, time.perf_counter() - began)
        for problem in problems:
            print(f"teardown: {problem}")
    return 0 if ok and not problems else 1


if __name__ == "__main__":
    sys.exit(main())
