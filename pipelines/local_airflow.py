"""Airflow's own components for one tidemark home, in the background, and DAG runs through them.

``tidemark airflow standalone`` (Airflow's ``standalone``: scheduler with the LocalExecutor, DAG processor, triggerer, API server) on
the SQLite metadata DB of ``$TIDEMARK_HOME/airflow``, the one ``tidemark airflow standalone``
shows: runs are created by the scheduler (its schedule, an Asset event, a trigger), their tasks run
as the executor's processes and write their logs, and the UI shows them as any deployment's. What
``tidemark demo`` drives its story with; :mod:`pipelines.dag_runs` (``dag.test()``, tasks in this
process) stays for tests that need a task's objects at hand.

This process reads and writes the same metadata DB (:func:`~pipelines.dag_runs.use_airflow_home`
must come first): it pauses and unpauses DAGs, triggers runs as ``airflow dags trigger`` does, and
reads each finished run's task states and return values.
"""

from __future__ import annotations

import getpass
import json
import os
import re
import subprocess
import sys
import time
import urllib.error
import urllib.request
from collections.abc import Callable
from datetime import datetime
from pathlib import Path
from typing import TYPE_CHECKING, Any, Self, TypeVar

from pipelines.cli_airflow import airflow_env
from pipelines.dag_runs import Ran, read_run
from tidemark.errors import TidemarkError
from tidemark.processes import stop_group

if TYPE_CHECKING:
    from tidemark.settings import Settings

__all__ = ["AirflowComponentsError", "LocalAirflow"]

T = TypeVar("T")
_FINISHED = ("success", "failed")
_PASSWORD = re.compile(r"(password[^:\n]*:\s*)\S+", re.IGNORECASE)


class AirflowComponentsError(TidemarkError):
    """Airflow's components did not start, or a run did not finish in time; the message has the
    log to read."""


class LocalAirflow:
    """``tidemark airflow standalone`` for ``settings``' home on ``port`` (loopback), while in a ``with``.

    ``env``: added to the components' environment (and so to every task's), over this process's
    and :func:`~pipelines.cli_airflow.airflow_env`'s. The components log to
    ``$AIRFLOW_HOME/standalone.log``; each task to Airflow's task log (the UI's Logs tab).
    """

    def __init__(self, settings: Settings, port: int, env: dict[str, str] | None = None) -> None:
        self.env = {**os.environ, **airflow_env(settings, port),
                    "AIRFLOW__LOGGING__LOGGING_LEVEL": "INFO",  # the task logs a person reads
                    **(env or {})}
        self.home = Path(self.env["AIRFLOW_HOME"])
        self.log = self.home / "standalone.log"
        self.url = self.env["AIRFLOW__API__BASE_URL"]
        self._proc: subprocess.Popen[bytes] | None = None

    def start(self) -> Self:
        """Start the components; returns at once (:meth:`wait_ready` waits for them)."""
        self.home.mkdir(parents=True, exist_ok=True)
        with open(self.log, "ab") as log:
            # `tidemark airflow standalone`, the command a person runs to look at the runs afterwards
            self._proc = subprocess.Popen([sys.executable, "-m", "pipelines.cli", "airflow", "standalone",
                                           "--port", self.env["AIRFLOW__API__PORT"]], env=self.env,
                                          stdout=log, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL,
                                          start_new_session=True)  # its own group: its workers stop with it
        return self

    def __enter__(self) -> Self:
        return self.start() if self._proc is None else self

    def __exit__(self, *exc: object) -> None:
        self.stop()

    def stop(self, grace_s: float = 30.0) -> None:
        """Stop every component (SIGTERM to the group, SIGKILL after ``grace_s``)."""
        proc, self._proc = self._proc, None
        if proc is not None:
            stop_group(proc, grace_s)

    def wait_ready(self, dag_ids: list[str], timeout_s: float = 300.0) -> None:
        """Until the API server answers (tasks run through its Execution API), the scheduler
        heartbeats and the DAG processor has stored ``dag_ids``."""
        def ready() -> bool | None:
            return True if self._api_healthy() and self._parsed(dag_ids) else None

        self._until("Airflow's components to start and parse the DAGs", ready, timeout_s)

    def set_paused(self, dag_id: str, paused: bool) -> None:
        """Pause or unpause ``dag_id``, as the UI's toggle does (unpausing a scheduled DAG lets the
        scheduler create its latest run: catchup is off)."""
        from airflow.models.dag import DagModel
        from airflow.utils.session import create_session

        with create_session() as session:
            model = session.get(DagModel, dag_id)
            if model is None:
                raise AirflowComponentsError(f"no DAG {dag_id!r} in {self.home}'s metadata DB")
            model.is_paused = paused

    def pause_all(self) -> None:
        """Pause every DAG of the metadata DB: what was unpaused for a while runs nothing later."""
        from airflow.models.dag import DagModel
        from airflow.utils.session import create_session
        from sqlalchemy import update

        with create_session() as session:
            session.execute(update(DagModel).where(DagModel.is_paused.is_(False)).values(is_paused=True))

    def trigger(self, dag_id: str, conf: dict[str, Any] | None = None, note: str | None = None) -> str:
        """A run of ``dag_id`` now, as ``airflow dags trigger`` makes it (no logical date: Airflow 3
        gives it no data interval); the scheduler runs it once the DAG is unpaused. Its run id."""
        from airflow.api.common.trigger_dag import trigger_dag
        from airflow.utils.session import create_session
        from airflow.utils.types import DagRunTriggeredByType

        with create_session() as session:
            run = trigger_dag(dag_id, triggered_by=DagRunTriggeredByType.CLI, triggering_user_name=getpass.getuser(),
                              conf=conf or {}, note=note, session=session)
            if run is None:
                raise AirflowComponentsError(f"Airflow created no run of {dag_id}")
            return str(run.run_id)

    def wait(self, dag_id: str, run_id: str, timeout_s: float = 900.0) -> Ran:
        """Until the run has finished; its states and return values."""
        from airflow.models.dagrun import DagRun
        from airflow.utils.session import create_session

        def finished() -> Ran | None:
            with create_session() as session:
                run = DagRun.find(dag_id=dag_id, run_id=run_id, session=session)
                return read_run(run[0], session) if run and run[0].state in _FINISHED else None

        return self._until(f"the {dag_id} run {run_id} to finish", finished, timeout_s)

    def next_run(self, dag_id: str, after: datetime, run_type: str, timeout_s: float = 300.0) -> str:
        """The first run of ``dag_id`` of ``run_type`` (``scheduled``, ``asset_triggered``, …) that
        the scheduler queued after ``after``: its run id, once it exists."""
        def queued() -> str | None:
            found = self.runs(dag_id, after, run_type)
            return found[0][0] if found else None

        return self._until(f"the scheduler to create a {run_type} run of {dag_id}", queued, timeout_s)

    def runs(self, dag_id: str, after: datetime, run_type: str | None = None) -> list[tuple[str, str, datetime]]:
        """``(run id, state, run_after)`` of ``dag_id``'s runs queued after ``after``, oldest first."""
        from airflow.models.dagrun import DagRun
        from airflow.utils.session import create_session
        from sqlalchemy import select

        query = select(DagRun.run_id, DagRun.state, DagRun.run_after).where(
            DagRun.dag_id == dag_id, DagRun.queued_at > after).order_by(DagRun.run_after, DagRun.id)
        if run_type is not None:
            query = query.where(DagRun.run_type == run_type)
        with create_session() as session:
            return [(str(r), str(s), a) for r, s, a in session.execute(query).all()]

    def read(self, dag_id: str, run_id: str) -> Ran:
        """A run as it stands (finished or not)."""
        from airflow.models.dagrun import DagRun
        from airflow.utils.session import create_session

        with create_session() as session:
            return read_run(DagRun.find(dag_id=dag_id, run_id=run_id, session=session)[0], session)

    # --- waiting --------------------------------------------------------------------------------

    def _until(self, what: str, probe: Callable[[], T | None], timeout_s: float) -> T:
        deadline = time.monotonic() + timeout_s
        while True:
            if self._proc is not None and self._proc.poll() is not None:
                raise AirflowComponentsError(f"airflow standalone exited ({self._proc.returncode}) while waiting for "
                                             f"{what}; its log: {self.log}\n{self._tail()}")
            found = probe()
            if found is not None:
                return found
            if time.monotonic() > deadline:
                raise AirflowComponentsError(f"waited {timeout_s:.0f} s for {what}; the components' log: {self.log}, "
                                             f"the task logs: {self.home / 'logs'}\n{self._tail()}")
            time.sleep(1.0)

    def _api_healthy(self) -> bool:
        try:
            with urllib.request.urlopen(f"{self.url}/api/v2/monitor/health", timeout=5) as answer:
                health = json.load(answer)
        except (urllib.error.URLError, OSError, ValueError):
            return False
        return bool(health.get("scheduler", {}).get("status") == "healthy")

    def _parsed(self, dag_ids: list[str]) -> bool:
        from airflow.models.serialized_dag import SerializedDagModel
        from airflow.utils.session import create_session
        from sqlalchemy import select

        with create_session() as session:
            found = set(session.scalars(select(SerializedDagModel.dag_id).where(SerializedDagModel.dag_id.in_(dag_ids))))
        return found == set(dag_ids)

    def _tail(self, chars: int = 3000) -> str:
        """The end of the components' log for an error message, without the admin password that
        ``airflow standalone`` prints there (it stays in its file under ``$AIRFLOW_HOME``)."""
        try:
            text = self.log.read_text(errors="replace")[-chars:]
        except OSError:
            return ""
        return _PASSWORD.sub(r"\1***", text)
