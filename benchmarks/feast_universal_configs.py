"""The repo configurations Feast's universal tests run with when ``feast_universal.py`` drives them.

Feast's test suite reads the module named by ``FULL_REPO_CONFIGS_MODULE``
(``tests/universal/feature_repos/repo_configuration.py`` in a Feast checkout). This module is that
one for tidemark: it only imports inside a Feast checkout's ``sdk/python`` (it needs Feast's
``tests`` package), and it reads what the runner decided from the environment:

``TIDEMARK_UNIVERSAL_REDIS_URL``
    ``redis://127.0.0.1:PORT/0`` of the throwaway server the runner started.
``TIDEMARK_UNIVERSAL_STORES``
    ``tidemark`` (default): tidemark's ``SparkAsofOfflineStore`` over Feast's own Spark data
    sources, and tidemark's ``PackedRedisOnlineStore``. ``feast``: Feast's ``spark`` offline store
    and Feast's ``redis`` online store on the same Redis, the reference run that tells a failure of
    the suite's environment (a missing service, a test Feast itself skips) from one of ours.
``TIDEMARK_UNIVERSAL_REDIS_KEY``
    ``url`` (default): tidemark's store gets ``url: redis://…``. ``connection_string``: it gets the
    ``host:port,db=0`` string Feast's own ``redis`` entries use, the drop-in case.
``TIDEMARK_UNIVERSAL_CREATED_FILTER``
    ``on`` (default, tidemark's default): a row whose created timestamp is later than the
    prediction time is not used. ``off``: Feast's semantics (the latest created row wins), to tell
    the failures this intended difference causes from the others.

The online store is registered under the name ``redis``: Feast's suite selects Redis-only tests
with ``@pytest.mark.universal_online_stores(only=["redis"])``, and a drop-in replacement for
Feast's Redis store has to pass those too.
"""

from __future__ import annotations

import os
import tempfile
from typing import Any
from urllib.parse import urlsplit

from feast.infra.offline_stores.contrib.spark_offline_store.tests.data_source import SparkDataSourceCreator
from tests.universal.feature_repos.integration_test_repo_config import IntegrationTestRepoConfig
from tests.universal.feature_repos.universal.data_source_creator import DataSourceCreator

from features.offline_store import SparkAsofOfflineStoreConfig

_STORES = os.environ.get("TIDEMARK_UNIVERSAL_STORES", "tidemark")
_REDIS_URL = os.environ.get("TIDEMARK_UNIVERSAL_REDIS_URL", "")
_REDIS_KEY = os.environ.get("TIDEMARK_UNIVERSAL_REDIS_KEY", "url")

if not _REDIS_URL:
    raise RuntimeError("TIDEMARK_UNIVERSAL_REDIS_URL is unset: run Feast's suite through "
                       "benchmarks/feast_universal.py, which starts a Redis and sets it")
if _STORES not in ("tidemark", "feast"):
    raise RuntimeError(f"TIDEMARK_UNIVERSAL_STORES={_STORES!r}: use 'tidemark' or 'feast'")


def _spark_conf() -> dict[str, str]:
    """Two local cores (the machines that run this are shared), UTC, loopback only."""
    return {"spark.master": os.environ.get("TIDEMARK_UNIVERSAL_SPARK_MASTER", "local[2]"),
            "spark.ui.enabled": "false", "spark.eventLog.enabled": "false",
            "spark.sql.session.timeZone": "UTC", "spark.sql.shuffle.partitions": "4",
            "spark.sql.parser.quotedRegexColumnNames": "true",
            "spark.driver.host": "127.0.0.1", "spark.driver.bindAddress": "127.0.0.1"}


class LocalSparkDataSourceCreator(SparkDataSourceCreator):
    """Feast's Spark data sources and Feast's ``spark`` offline store, on ``local[2]``.

    Feast's creator starts its session with ``local[*]`` in its constructor; this one lets
    ``create_data_source`` start it (it does when none exists) with :func:`_spark_conf`.
    """

    def __init__(self, project_name: str, *args: Any, **kwargs: Any) -> None:
        DataSourceCreator.__init__(self, project_name)
        self.spark_conf = _spark_conf()
        self.spark_session = None
        self.tables = []
        self.create_offline_store_config()

    def teardown(self) -> None:
        """Feast's teardown stops the session; only when this environment started one."""
        if self.spark_session is not None:
            super().teardown()


class TidemarkSparkDataSourceCreator(LocalSparkDataSourceCreator):
    """Feast's Spark data sources, read by tidemark's ``SparkAsofOfflineStore``."""

    def create_offline_store_config(self) -> SparkAsofOfflineStoreConfig:  # type: ignore[override]
        config = SparkAsofOfflineStoreConfig(
            spark_conf=_spark_conf(), staging_location=tempfile.mkdtemp(prefix="tidemark_staging_"),
            filter_by_created_timestamp=os.environ.get("TIDEMARK_UNIVERSAL_CREATED_FILTER", "on") != "off")
        self.spark_offline_store_config = config
        return config


def _feast_connection_string(url: str) -> str:
    """``redis://host:port/db`` in Feast's ``host:port,db=N`` form."""
    parts = urlsplit(url)
    db = (parts.path or "/0").lstrip("/") or "0"
    return f"{parts.hostname}:{parts.port},db={db}"


def _online_store() -> dict[str, Any]:
    if _STORES == "feast":
        return {"type": "redis", "connection_string": _feast_connection_string(_REDIS_URL)}
    store: dict[str, Any] = {"type": "features.online_store.PackedRedisOnlineStore"}
    if _REDIS_KEY == "connection_string":
        store["connection_string"] = _feast_connection_string(_REDIS_URL)
    else:
        store["url"] = _REDIS_URL
    return store


_CREATOR = TidemarkSparkDataSourceCreator if _STORES == "tidemark" else LocalSparkDataSourceCreator

FULL_REPO_CONFIGS = [
    IntegrationTestRepoConfig(provider="local", offline_store_creator=_CREATOR, online_store=_online_store()),
]

# Read by Feast's repo_configuration.py in preference to FULL_REPO_CONFIGS; the same stores, with the
# online one under the name Feast's Redis-only tests ask for.
AVAILABLE_OFFLINE_STORES = [(c.provider, c.offline_store_creator) for c in FULL_REPO_CONFIGS]
AVAILABLE_ONLINE_STORES = {"redis": (FULL_REPO_CONFIGS[0].online_store, None)}
