"""What the four DAGs share: their Assets, retries, the interval of a run and the settings of a task.

Kept free of work: a task calls one function of ``features``/``monitoring``/``serving``/
``pipelines`` and passes the run's data interval, never the wall clock.

Retries are for what can heal. Every task's ``retry_policy`` (:data:`RETRY_POLICY`, in each DAG's
``default_args``) fails at once, whatever its ``retries``, on an error that names something a
person must fix (:data:`DETERMINISTIC_ERRORS`: bad configuration, input, data, contract or
project); every other error (Redis down or refusing a write, an MLflow or network error, data that
is not there yet, an ``OSError``) takes the task's retries. The error itself is what fails the
task: its type and message reach the log, the UI and the failure notification unchanged.
"""

from __future__ import annotations

import logging
from datetime import UTC, datetime, timedelta
from typing import TYPE_CHECKING, Any

from airflow.sdk import Asset, AssetAlias, Connection, ExceptionRetryPolicy, RetryAction, RetryRule
from airflow.sdk.exceptions import AirflowNotFoundException

from features import errors as feature_errors
from monitoring.errors import MonitoringError
from pipelines import errors as pipeline_errors
from serving import errors as serving_errors
from tidemark.errors import ConfigError

if TYPE_CHECKING:
    from tidemark.settings import Settings

log = logging.getLogger(__name__)

#: Emitted by ``drift_monitor`` when it decides "drift", with the decision's summary as ``extra``;
#: ``retrain`` is scheduled on it.
RETRAIN_REQUEST = Asset("tidemark://retrain-request")

#: Emitted by ``retrain`` when it starts a challenger's canary, with the start's summary as
#: ``extra``; ``canary_rollout`` is scheduled on it and then queues its own next look.
CANARY_STARTED = Asset("tidemark://canary-started")

#: Where ``feature_pipeline`` announces the views it published (materialized, then checked online):
#: one event of :func:`feature_asset` per view, through this alias, because the views are the
#: project's, known when the task runs and not when the DAG file is parsed.
FEATURES_PUBLISHED = AssetAlias("tidemark-features")


def feature_asset(view: str) -> Asset:
    """The Asset of one feature view's fresh online values: a team schedules its DAGs on
    ``Asset("tidemark://features/<view>")``."""
    return Asset(f"tidemark://features/{view}")


#: A date before any data: no run is created for it (catchup is off).
START_DATE = datetime(2026, 1, 1, tzinfo=UTC)

#: Tasks that call Redis or MLflow retry: a restart or a blip should not fail the run. Airflow 3.3
#: reads the backoff as a multiplier (``True`` is 1: a constant delay): 2 doubles the delay each try.
NETWORK_RETRIES: dict[str, Any] = {"retries": 2, "retry_delay": timedelta(minutes=1), "retry_exponential_backoff": 2.0}

#: tidemark's errors that a retry cannot heal: the same inputs raise them again. Left out on
#: purpose, so they are retried: Redis failing a call (``OnlineStoreError`` but a corrupt value),
#: data not there yet (``DataNotFoundError``), a partition move or journal, the MLflow registry
#: refusing an operation (``RegistryError`` but no champion / no such version), a canary state
#: write that Redis failed or another writer won, and anything not tidemark's own.
DETERMINISTIC_ERRORS: tuple[type[Exception], ...] = (
    ConfigError,  # the kernel's and the feature store's (an unresolved entity too)
    feature_errors.EntityFrameError, feature_errors.EventError, feature_errors.UnknownFeatureError,
    feature_errors.UnknownFeatureServiceError, feature_errors.UnknownPushSourceError,
    feature_errors.OfflineWriteError, feature_errors.DataCheckError, feature_errors.CorruptValueError,
    MonitoringError,
    pipeline_errors.ProjectError, pipeline_errors.TrainingError, pipeline_errors.NoChampionError,
    pipeline_errors.GateError, pipeline_errors.ModelVersionError,
    serving_errors.ModelFormatError, serving_errors.ContractError, serving_errors.ModelInputError,
)

#: Every task's: fail at once on :data:`DETERMINISTIC_ERRORS`, else the task's retries.
RETRY_POLICY = ExceptionRetryPolicy(rules=[RetryRule(
    exception=list(DETERMINISTIC_ERRORS), action=RetryAction.FAIL,
    reason="a retry cannot heal this error: fix what its message names, then clear the task")])


def run_interval(start: datetime | None, end: datetime | None, run_after: datetime,
                 every: timedelta) -> tuple[datetime, datetime]:
    """The interval ``[start, end)`` a run covers: its data interval, or, for a run that has none
    (Airflow 3 gives none to a run triggered without a logical date, e.g. ``airflow dags trigger``),
    the ``every`` (the schedule's period) up to its ``run_after``, the time it was triggered for."""
    if start is not None and end is not None:
        return start, end
    return run_after - every, run_after


def settings() -> Settings:
    """The platform's settings, from the worker's environment (``TIDEMARK_*``, ``MLFLOW_TRACKING_URI``),
    with Redis, MLflow and Spark from the ``tidemark_redis``/``tidemark_mlflow``/``tidemark_spark``
    Airflow Connections where those are defined (they win: :mod:`pipelines.dags.connections`)."""
    from pipelines.dags.connections import CONNECTION_IDS, settings_with_connections
    from tidemark.settings import Settings

    current = settings_with_connections(Settings.from_env(), {i: defined_connection(i) for i in CONNECTION_IDS})
    current.secure_home(process_umask=True)  # the task's files under home are private, as the CLI's
    return current


def defined_connection(conn_id: str) -> Connection | None:
    """The Airflow Connection ``conn_id``, or None when no backend (the metadata DB, an
    ``AIRFLOW_CONN_*`` variable, a secrets backend) defines it."""
    try:
        return Connection.get(conn_id)
    except AirflowNotFoundException:
        log.debug("no %s connection: the environment's setting applies", conn_id)
        return None
