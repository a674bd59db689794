"""The DAG tasks' Redis, MLflow and Spark settings from Airflow Connections, so that a deployment
configures them in the Airflow UI (``airflow connections add``, ``AIRFLOW_CONN_<ID>`` variables, a
secrets backend) like any provider's.

    connection        settings field             what it reads, first match wins
    ────────────────  ─────────────────────────  ──────────────────────────────────────────────────
    tidemark_redis    redis_url                  extra "url" or a whole URL in host; else host,
                                                 port (6379), login, password, the db in schema
                                                 (the URI's path: redis://:pw@host:6379/0) or
                                                 extra "db", TLS with extra "ssl": true (rediss://)
    tidemark_mlflow   mlflow_tracking_uri        extra "tracking_uri" or "uri" (any MLflow URI:
                                                 databricks, postgresql://…); a whole URL in host;
                                                 else http(s)://host:port, the scheme from schema
                                                 or the type (http://mlflow:5000 as a URI)
    tidemark_spark    spark.master,              extra "master" or "remote"; a URL in host (spark://,
                      spark.extra_conf           sc://, k8s://) or a master word (local[4], yarn);
                                                 type spark_connect: sc://host:port (15002) with
                                                 extra "token", "use_ssl", "user_id"; type spark:
                                                 spark://host:port (7077); extra "conf": more Spark
                                                 settings, merged over TIDEMARK_SPARK_CONF's

Precedence: a defined Connection wins over the environment variable (``TIDEMARK_REDIS_URL``,
``MLFLOW_TRACKING_URI``, ``TIDEMARK_SPARK_MASTER``) for DAG tasks. A worker's environment is
mostly inherited (the image, the shell that started ``tidemark airflow standalone``), while a
Connection is the deployment's deliberate, per-environment choice that the UI shows; an undefined
one leaves the environment's value as it is. Credentials stay in the Connection (the URL built here
is kept out of ``Settings``' repr).

Only duck-typed fields are read (``conn_type``, ``host``, ``port``, ``schema``, ``login``,
``password``, ``extra_dejson``): this module imports nothing of Airflow's.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Mapping
from typing import Any, Protocol
from urllib.parse import quote

from tidemark.errors import ConfigError
from tidemark.settings import Settings

__all__ = ["CONNECTION_IDS", "MLFLOW_CONN_ID", "REDIS_CONN_ID", "SPARK_CONN_ID", "ConnectionLike",
           "mlflow_tracking_uri", "redis_url", "settings_with_connections", "spark_conf", "spark_master"]

REDIS_CONN_ID = "tidemark_redis"
MLFLOW_CONN_ID = "tidemark_mlflow"
SPARK_CONN_ID = "tidemark_spark"
CONNECTION_IDS = (REDIS_CONN_ID, MLFLOW_CONN_ID, SPARK_CONN_ID)

_SPARK_MASTER_WORDS = ("local", "yarn")


class ConnectionLike(Protocol):
    """The fields of an Airflow ``Connection`` read here."""

    conn_id: str
    conn_type: str | None
    host: str | None
    port: int | None
    schema: str | None
    login: str | None
    password: str | None

    @property
    def extra_dejson(self) -> dict[str, Any]: ...


def settings_with_connections(base: Settings, connections: Mapping[str, ConnectionLike | None]) -> Settings:
    """``base`` with the fields of each defined connection of :data:`CONNECTION_IDS` replaced
    (None or absent: not defined, the environment's value stays)."""
    changes: dict[str, Any] = {}
    if (redis := connections.get(REDIS_CONN_ID)) is not None:
        changes["redis_url"] = redis_url(redis)
    if (mlflow := connections.get(MLFLOW_CONN_ID)) is not None:
        changes["mlflow_tracking_uri"] = mlflow_tracking_uri(mlflow)
    if (spark := connections.get(SPARK_CONN_ID)) is not None:
        changes["spark"] = dataclasses.replace(base.spark, master=spark_master(spark),
                                               extra_conf={**base.spark.extra_conf, **spark_conf(spark)})
    return dataclasses.replace(base, **changes) if changes else base


def redis_url(connection: ConnectionLike) -> str:
    """The Redis URL a ``tidemark_redis`` connection names (see the module docstring)."""
    extra = _extra(connection)
    whole = _whole_url(connection, extra, "url")
    if whole:
        return whole
    host = _host(connection, "redis://cache:6379/0")
    db = extra.get("db", connection.schema or 0)
    if not str(db).isdigit():
        raise ConfigError(f"the {connection.conn_id} connection's db {db!r} is not a database number; "
                          "put it in the URI's path (redis://host:6379/0) or extra's \"db\"")
    credentials = _credentials(connection.login, connection.password)
    scheme = "rediss" if _truthy(extra.get("ssl")) else "redis"
    return f"{scheme}://{credentials}{host}:{connection.port or 6379}/{int(db)}"


def mlflow_tracking_uri(connection: ConnectionLike) -> str:
    """The MLflow tracking URI a ``tidemark_mlflow`` connection names (see the module docstring)."""
    extra = _extra(connection)
    whole = _whole_url(connection, extra, "tracking_uri", "uri")
    if whole:
        return whole
    host = _host(connection, "http://mlflow:5000")
    scheme = next((s for s in (connection.schema, connection.conn_type) if s in ("http", "https")), "http")
    port = f":{connection.port}" if connection.port else ""
    return f"{scheme}://{host}{port}"


def spark_master(connection: ConnectionLike) -> str:
    """The Spark master (or Spark Connect URL) a ``tidemark_spark`` connection names."""
    extra = _extra(connection)
    whole = _whole_url(connection, extra, "master", "remote")
    if whole:
        return whole
    host = _host(connection, "spark://master:7077, local[4] or sc://connect:15002")
    if host.startswith(_SPARK_MASTER_WORDS):
        return host
    if (connection.conn_type or "").replace("-", "_") == "spark_connect":
        params = {"token": extra.get("token") or connection.password, "user_id": extra.get("user_id") or connection.login,
                  "use_ssl": "true" if _truthy(extra.get("use_ssl")) else None}
        suffix = "".join(f";{k}={quote(str(v), safe='')}" for k, v in params.items() if v)
        return f"sc://{host}:{connection.port or 15002}" + (f"/{suffix}" if suffix else "")
    return f"spark://{host}:{connection.port or 7077}"


def spark_conf(connection: ConnectionLike) -> dict[str, str]:
    """The Spark settings in a ``tidemark_spark`` connection's extra ``conf`` (an object)."""
    conf = _extra(connection).get("conf") or {}
    if not isinstance(conf, dict):
        raise ConfigError(f"the {connection.conn_id} connection's extra \"conf\" must be an object of Spark "
                          'settings, such as {"spark.executor.memory": "4g"}')
    return {str(k): str(v) for k, v in conf.items()}


def _extra(connection: ConnectionLike) -> dict[str, Any]:
    return dict(connection.extra_dejson or {})


def _whole_url(connection: ConnectionLike, extra: Mapping[str, Any], *keys: str) -> str | None:
    """A whole URL given in extra (the first of ``keys`` set) or in the host field, else None."""
    for key in keys:
        if extra.get(key):
            return str(extra[key])
    host = connection.host or ""
    return host if "://" in host else None


def _host(connection: ConnectionLike, example: str) -> str:
    if not connection.host:
        raise ConfigError(f"the {connection.conn_id} connection has no host: set its host and port, or a whole "
                          f"URL such as {example}, or delete it to use the environment's setting")
    return connection.host


def _credentials(login: str | None, password: str | None) -> str:
    if not login and not password:
        return ""
    return f"{quote(login or '', safe='')}:{quote(password or '', safe='')}@"


def _truthy(value: Any) -> bool:
    return value is True or str(value).lower() in ("true", "1", "yes")
