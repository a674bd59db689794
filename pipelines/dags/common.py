"""What the four DAGs share: their Assets, retries, and the settings of a task.

Kept free of work: a task calls one function of ``features``/``monitoring``/``serving``/
``pipelines`` and passes the run's data interval, never the wall clock.
"""

from __future__ import annotations

import logging
from datetime import UTC, datetime, timedelta
from typing import TYPE_CHECKING, Any

from airflow.sdk import Asset, AssetAlias, Connection
from airflow.sdk.exceptions import AirflowNotFoundException

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

#: Tasks that call Redis or MLflow retry: a restart or a blip should not fail the run.
NETWORK_RETRIES: dict[str, Any] = {"retries": 2, "retry_delay": timedelta(minutes=1), "retry_exponential_backoff": True}


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
