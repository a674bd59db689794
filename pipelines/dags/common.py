"""What the four DAGs share: the retrain Asset, retries, and the settings of a task.

Kept free of work: a task calls one function of ``features``/``monitoring``/``serving``/
``pipelines`` and passes the run's data interval, never the wall clock.
"""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from typing import TYPE_CHECKING, Any

from airflow.sdk import Asset

if TYPE_CHECKING:
    from tidemark.settings import Settings

#: Emitted by ``drift_monitor`` when it decides "drift", with the decision's summary as ``extra``;
#: ``retrain`` is scheduled on it.
RETRAIN_REQUEST = Asset("tidemark://retrain-request")

#: A date before any data: no run is created for it (catchup is off).
START_DATE = datetime(2026, 1, 1, tzinfo=UTC)

#: Tasks that call Redis or MLflow retry: a restart or a blip should not fail the run.
NETWORK_RETRIES: dict[str, Any] = {"retries": 2, "retry_delay": timedelta(minutes=1), "retry_exponential_backoff": True}


def settings() -> Settings:
    """The platform's settings, from the worker's environment (``TIDEMARK_*``, ``MLFLOW_TRACKING_URI``)."""
    from tidemark.settings import Settings

    current = Settings.from_env()
    current.secure_home(process_umask=True)  # the task's files under home are private, as the CLI's
    return current
