"""Spark's own servers on loopback, started from the pyspark wheel (``bin/spark-class``,
``bin/spark-submit``) and owned by the test: a standalone master with one worker (executors in
their own JVMs, with their own Python workers) and a Spark Connect server.

None of them gets this checkout on ``PYTHONPATH``: their Python workers import tidemark only from
what the driver ships them (``features.spark.ship_packages``), as on a cluster of other machines.
"""

from __future__ import annotations

import os
import subprocess
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path

import pyspark

from tests.integration.redis_servers import free_port

SPARK_HOME = Path(pyspark.__file__).parent
#: C1 only: the JVMs run small jobs, and C2 would spend most of their CPU compiling
QUICK_JIT = "-Duser.timezone=UTC -XX:TieredStopAtLevel=1"


@dataclass
class SparkProc:
    """One JVM of Spark's, its log, and the URL it serves."""

    name: str
    url: str
    log_path: Path
    proc: subprocess.Popen[bytes] = field(repr=False)

    def stop(self) -> None:
        if self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(timeout=30)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait(timeout=10)


def _env() -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if k not in {"PYTHONPATH", "SPARK_REMOTE", "MASTER"}}
    # the workers' interpreter: this environment's, with its packages but not this checkout
    return {**env, "SPARK_HOME": str(SPARK_HOME), "PYSPARK_PYTHON": sys.executable,
            "SPARK_DAEMON_JAVA_OPTS": QUICK_JIT, "SPARK_LOCAL_IP": "127.0.0.1"}


def _start(name: str, args: list[str], folder: Path, ready: str, url: str, timeout_s: float = 120.0) -> SparkProc:
    folder.mkdir(parents=True, exist_ok=True)
    log_path = folder / f"{name}.log"
    with open(log_path, "wb") as out:
        proc = subprocess.Popen(args, cwd=folder, env=_env(), stdout=out, stderr=subprocess.STDOUT,
                                stdin=subprocess.DEVNULL)
    server = SparkProc(name, url, log_path, proc)
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        text = log_path.read_text(errors="replace")
        if ready in text:
            return server
        if proc.poll() is not None:
            break
        time.sleep(0.5)
    server.stop()
    raise RuntimeError(f"Spark {name} did not start ({ready!r} not logged):\n{log_path.read_text(errors='replace')[-3000:]}")


def start_standalone(folder: Path, *, cores: int = 2, memory: str = "2g") -> list[SparkProc]:
    """A standalone master and one worker on loopback; the master's URL is ``[0].url``."""
    port = free_port()
    url = f"spark://127.0.0.1:{port}"
    master = _start("master", [str(SPARK_HOME / "bin" / "spark-class"), "org.apache.spark.deploy.master.Master",
                               "--host", "127.0.0.1", "--port", str(port), "--webui-port", str(free_port())],
                    folder, "I have been elected leader", url)
    try:
        worker = _start("worker", [str(SPARK_HOME / "bin" / "spark-class"), "org.apache.spark.deploy.worker.Worker",
                                   url, "--host", "127.0.0.1", "--cores", str(cores), "--memory", memory,
                                   "--webui-port", str(free_port()), "--work-dir", str(folder / "work")],
                        folder, "Successfully registered with master", url)
    except BaseException:
        master.stop()
        raise
    return [master, worker]


def start_connect(folder: Path) -> SparkProc:
    """A Spark Connect server on loopback (its driver runs ``local[2]``)."""
    port = free_port()
    return _start("connect", [str(SPARK_HOME / "bin" / "spark-submit"), "--class",
                              "org.apache.spark.sql.connect.service.SparkConnectServer", "--master", "local[2]",
                              "--driver-java-options", QUICK_JIT,
                              "--conf", f"spark.connect.grpc.binding.port={port}",
                              "--conf", "spark.connect.grpc.binding.address=127.0.0.1",
                              "--conf", "spark.driver.host=127.0.0.1", "--conf", "spark.ui.enabled=false"],
                  folder, "Spark Connect server started", f"sc://127.0.0.1:{port}")
