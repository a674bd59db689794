"""Typed settings, read from ``TIDEMARK_*`` environment variables.

Entry points (the CLI, ``FeatureClient()``, DAG tasks) call :meth:`Settings.from_env` once and
pass the result down; library code never reads the environment itself.
"""

from __future__ import annotations

import json
import os
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path

from tidemark.errors import ConfigError

_PREFIX = "TIDEMARK_"

#: The bundled example's project (Feast repo + ``tidemark.yaml``), used when no ``--repo`` /
#: ``TIDEMARK_FEAST_REPO`` is given. A path beside the installed packages, read as data: the
#: platform never imports the example's code, it calls the entry points its project file names.
BUNDLED_PROJECT = Path(__file__).resolve().parents[1] / "examples" / "fraud" / "feature_repo"


@dataclass(frozen=True)
class SparkSettings:
    """How tidemark starts (or joins) its Spark session."""

    master: str = "local[*]"
    driver_memory: str = "4g"
    shuffle_partitions: int = 8
    extra_conf: Mapping[str, str] = field(default_factory=dict)


@dataclass(frozen=True)
class Settings:
    """Everything tidemark needs to know about where its state lives."""

    home: Path
    spark: SparkSettings
    project: str = "tidemark"
    # an external Redis or Redis Cluster; None: tidemark's embedded server. Not in repr: it may hold a password
    redis_url: str | None = field(default=None, repr=False)
    online_timeout_ms: int = 50  # budget (milliseconds) for one online feature read
    mlflow_tracking_uri: str | None = field(default=None, repr=False)  # MLFLOW_TRACKING_URI; None: sqlite under home
    model_name: str = "fraud-detector"  # the MLflow registered model
    # TIDEMARK_FEAST_REPO: a team's project (a Feast repo with tidemark.yaml); None: the bundled example
    feast_repo: Path | None = None
    admin_token: str | None = field(default=None, repr=False)  # bearer token of the canary endpoints
    # The canary controller's patience per ramp step (monitoring.rollout.CanaryPolicy): size
    # them to the traffic, so that a step's dwell brings min_samples model calls of each variant.
    canary_min_dwell_s: int = 300
    canary_min_samples: int = 1_000
    canary_max_p99_ratio: float = 1.2  # hold while the challenger's p99 exceeds the champion's by more
    canary_look_every_s: int = 300  # between two canary_rollout looks of a running canary
    # TIDEMARK_UMASK (octal): what tidemark's processes create under home is private by default
    # (files 0600, folders 0700); 027 lets the owner's group read, 022 everyone
    umask: int = 0o077
    # TIDEMARK_PROMETHEUS_TEXTFILE_DIR: where drift runs write their node_exporter textfile
    # (None: $TIDEMARK_HOME/reports/prometheus); TIDEMARK_PUSHGATEWAY_URL: also push them there
    prometheus_textfile_dir: Path | None = None
    pushgateway_url: str | None = field(default=None, repr=False)  # may carry credentials
    # TIDEMARK_AIRFLOW_DB: Airflow's metadata DB (postgresql://…); None: SQLite under home/airflow
    airflow_db: str | None = field(default=None, repr=False)  # may carry a password

    def secure_home(self, *, process_umask: bool = False) -> Path:
        """Create the home folder with the mode :attr:`umask` allows, and narrow an existing one that
        is wider (a home from an older version, or made by hand), so nothing under it (the
        prediction log, ``mlflow.db``, the artifacts, Redis' files) is readable by other users.
        ``process_umask``: also set this process's umask (entry points do: the CLI, a DAG task), so
        every file that tidemark, MLflow, Spark or redis-server creates gets that mode too.
        Returns the home."""
        if process_umask:
            os.umask(self.umask)
        mode = 0o777 & ~self.umask
        self.home.mkdir(parents=True, exist_ok=True, mode=mode)
        current = self.home.stat().st_mode & 0o777
        if current & ~mode:
            os.chmod(self.home, current & mode)
        return self.home

    @property
    def project_repo(self) -> Path:
        """The project in use: :attr:`feast_repo`, else the bundled example's (:data:`BUNDLED_PROJECT`)."""
        return self.feast_repo or BUNDLED_PROJECT

    @property
    def tracking_uri(self) -> str:
        """Where MLflow runs and the model registry live (``MLFLOW_TRACKING_URI``, or a SQLite
        database under the home folder with artifacts beside it)."""
        return self.mlflow_tracking_uri or f"sqlite:///{self.home / 'mlflow.db'}"

    @property
    def mlflow_artifacts_dir(self) -> Path:
        """Run artifacts and models when the tracking store is a database (SQLite, PostgreSQL …)
        rather than an MLflow server, which keeps artifacts itself."""
        return self.home / "mlartifacts"

    @property
    def textfile_dir(self) -> Path:
        """Where drift runs write ``tidemark_drift_<model>.prom`` for node_exporter's textfile collector:
        :attr:`prometheus_textfile_dir`, else ``$TIDEMARK_HOME/reports/prometheus``."""
        return self.prometheus_textfile_dir or self.home / "reports" / "prometheus"

    @property
    def redis_dir(self) -> Path:
        """Data, log and state of the embedded redis-server (used when ``redis_url`` is None)."""
        return self.home / "redis"

    @property
    def raw_dir(self) -> Path:
        """Raw events (transactions, labels, profiles), as generated."""
        return self.home / "raw"

    @property
    def offline_dir(self) -> Path:
        """Offline feature tables, Parquet partitioned by date."""
        return self.home / "offline"

    @property
    def registry_path(self) -> Path:
        """Feast file registry."""
        return self.home / "feast" / "registry.db"

    @classmethod
    def from_env(cls, env: Mapping[str, str] | None = None) -> Settings:
        """Read settings from ``env`` (default: ``os.environ``)."""
        env = os.environ if env is None else env
        home = Path(env.get(_PREFIX + "HOME", "./.tidemark")).expanduser().resolve()
        extra = _spark_conf(env.get(_PREFIX + "SPARK_CONF"))
        spark = SparkSettings(
            master=env.get(_PREFIX + "SPARK_MASTER", SparkSettings.master),
            driver_memory=env.get(_PREFIX + "SPARK_DRIVER_MEMORY", SparkSettings.driver_memory),
            shuffle_partitions=_positive_int(env, "SPARK_SHUFFLE_PARTITIONS", SparkSettings.shuffle_partitions),
            extra_conf=extra,
        )
        return cls(
            home=home,
            spark=spark,
            project=env.get(_PREFIX + "PROJECT", "tidemark"),
            redis_url=env.get(_PREFIX + "REDIS_URL") or None,
            online_timeout_ms=_positive_int(env, "ONLINE_TIMEOUT_MS", cls.online_timeout_ms),
            mlflow_tracking_uri=env.get("MLFLOW_TRACKING_URI") or None,
            model_name=env.get(_PREFIX + "MODEL_NAME") or cls.model_name,
            feast_repo=Path(env[_PREFIX + "FEAST_REPO"]).expanduser().resolve() if env.get(_PREFIX + "FEAST_REPO") else None,
            admin_token=env.get(_PREFIX + "ADMIN_TOKEN") or None,
            canary_min_dwell_s=_positive_int(env, "CANARY_MIN_DWELL_S", cls.canary_min_dwell_s),
            canary_min_samples=_positive_int(env, "CANARY_MIN_SAMPLES", cls.canary_min_samples),
            canary_max_p99_ratio=_ratio(env, "CANARY_MAX_P99_RATIO", cls.canary_max_p99_ratio),
            canary_look_every_s=_positive_int(env, "CANARY_LOOK_EVERY_S", cls.canary_look_every_s),
            umask=_umask(env.get(_PREFIX + "UMASK")),
            prometheus_textfile_dir=_path(env, "PROMETHEUS_TEXTFILE_DIR"),
            pushgateway_url=env.get(_PREFIX + "PUSHGATEWAY_URL") or None,
            airflow_db=env.get(_PREFIX + "AIRFLOW_DB") or None,
        )


def _path(env: Mapping[str, str], name: str) -> Path | None:
    raw = env.get(_PREFIX + name)
    return Path(raw).expanduser().resolve() if raw else None


def _spark_conf(raw: str | None) -> dict[str, str]:
    """``TIDEMARK_SPARK_CONF``: a JSON object of Spark settings (keys are case-sensitive)."""
    if not raw:
        return {}
    try:
        parsed = json.loads(raw)
    except json.JSONDecodeError as exc:
        raise ConfigError(f"{_PREFIX}SPARK_CONF is not valid JSON ({exc.msg}); "
                          'give an object such as {"spark.sql.shuffle.partitions": "16"}') from None
    if not isinstance(parsed, dict):
        raise ConfigError(f"{_PREFIX}SPARK_CONF must be a JSON object of setting names to values")
    return {str(k): str(v) for k, v in parsed.items()}


def _positive_int(env: Mapping[str, str], name: str, default: int) -> int:
    raw = env.get(_PREFIX + name)
    if raw is None:
        return default
    try:
        value = int(raw)
    except ValueError:
        value = 0
    if value <= 0:
        raise ConfigError(f"{_PREFIX}{name}={raw!r} is not a positive integer; set it to e.g. {default}")
    return value


def _ratio(env: Mapping[str, str], name: str, default: float) -> float:
    raw = env.get(_PREFIX + name)
    if raw is None:
        return default
    try:
        value = float(raw)
    except ValueError:
        value = 0.0
    if not value >= 1.0 or value == float("inf"):
        raise ConfigError(f"{_PREFIX}{name}={raw!r} is not a finite ratio >= 1; set it to e.g. {default}")
    return value


def _umask(raw: str | None) -> int:
    """``TIDEMARK_UMASK``: an octal umask that keeps the owner's own access (e.g. 077, 027, 022)."""
    if raw is None:
        return Settings.umask
    try:
        value = int(raw, 8)
    except ValueError:
        value = -1
    if not 0 <= value <= 0o077:
        raise ConfigError(f"{_PREFIX}UMASK={raw!r} is not an octal umask that leaves the owner read, write and "
                          "search; set it to e.g. 077 (private, the default), 027 (group may read) or 022")
    return value
