"""What the README's Airflow production set-up installs and sets: the metadata DB URLs that
``tidemark airflow env`` derives, and the Celery and Kubernetes executors Airflow loads from the
extras. (A PostgreSQL metadata DB under the real scheduler: tests/integration/test_scheduler_postgres.py.)"""

from __future__ import annotations

import os
import shlex
import subprocess
import sys
from pathlib import Path

import pytest

from pipelines.cli_airflow import metadata_db_env
from tidemark.settings import Settings

BIN = Path(sys.executable).parent


@pytest.mark.parametrize("url", ["postgresql://u:pw@db:5432/airflow", "postgres://u:pw@db:5432/airflow",
                                 "postgresql+psycopg://u:pw@db:5432/airflow"])
def test_a_postgresql_db_gets_psycopg_for_both_connections(url: str) -> None:
    """Airflow would derive ``postgresql+asyncpg://`` for its async connection; asyncpg is not installed."""
    want = "postgresql+psycopg://u:pw@db:5432/airflow"
    assert metadata_db_env(url) == {"AIRFLOW__DATABASE__SQL_ALCHEMY_CONN": want,
                                    "AIRFLOW__DATABASE__SQL_ALCHEMY_CONN_ASYNC": want}


def test_other_dbs_are_passed_as_given_and_airflow_derives_the_async_url() -> None:
    for url in ("sqlite:////tmp/a/airflow.db", "mysql+mysqldb://u@db/airflow"):
        assert metadata_db_env(url) == {"AIRFLOW__DATABASE__SQL_ALCHEMY_CONN": url}


def test_tidemark_airflow_env_exports_the_db_of_tidemark_airflow_db(tmp_path: Path) -> None:
    assert Settings.from_env({"TIDEMARK_HOME": str(tmp_path)}).airflow_db is None
    out = subprocess.run([str(BIN / "tidemark"), "airflow", "env"], capture_output=True, text=True, check=True,
                         env={**os.environ, "TIDEMARK_HOME": str(tmp_path),
                              "TIDEMARK_AIRFLOW_DB": "postgresql://af:s3cret@db.internal/airflow"})
    env = dict(shlex.split(line.removeprefix("export "))[0].split("=", 1) for line in out.stdout.splitlines())
    assert env["AIRFLOW__DATABASE__SQL_ALCHEMY_CONN"] == "postgresql+psycopg://af:s3cret@db.internal/airflow"
    assert env["AIRFLOW__DATABASE__SQL_ALCHEMY_CONN_ASYNC"] == env["AIRFLOW__DATABASE__SQL_ALCHEMY_CONN"]
    assert "s3cret" not in repr(Settings.from_env({"TIDEMARK_AIRFLOW_DB": "postgresql://af:s3cret@db/airflow"}))


@pytest.mark.parametrize(("executor", "module"), [
    ("CeleryExecutor", "airflow.providers.celery.executors.celery_executor"),
    ("KubernetesExecutor", "airflow.providers.cncf.kubernetes.executors.kubernetes_executor"),
])
def test_the_readme_executors_load_from_the_installed_providers(tmp_path: Path, executor: str, module: str) -> None:
    """Airflow resolves ``[core] executor`` to the provider's class and imports it (celery 5.7 broke
    the Celery provider's import: the extra pins below it)."""
    code = ("from airflow.executors.executor_loader import ExecutorLoader; "
            "cls, _ = ExecutorLoader.import_default_executor_cls(); print(cls.__module__, cls.__name__)")
    env = {**os.environ, "AIRFLOW_HOME": str(tmp_path), "AIRFLOW__CORE__LOAD_EXAMPLES": "False",
           "AIRFLOW__DATABASE__SQL_ALCHEMY_CONN": f"sqlite:///{tmp_path / 'airflow.db'}",
           "AIRFLOW__CORE__EXECUTOR": executor}
    out = subprocess.run([sys.executable, "-c", code], check=False, capture_output=True, text=True, env=env,
                         timeout=120)
    assert out.returncode == 0, out.stderr[-2000:]
    assert out.stdout.split()[-2:] == [module, executor]
