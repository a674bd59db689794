"""The one place that starts or joins tidemark's Spark session."""

from __future__ import annotations

import logging
import os
import sys
from collections.abc import Mapping
from pathlib import Path
from typing import TYPE_CHECKING

from tidemark.extras import require
from tidemark.settings import SparkSettings

if TYPE_CHECKING:
    from pyspark.sql import SparkSession

log = logging.getLogger(__name__)

#: Session settings tidemark relies on. UTC so that anything Spark renders or parses is UTC,
#: string partition values so ``date=2026-01-01`` stays a string and is not inferred as a date.
BASE_CONF: dict[str, str] = {
    "spark.sql.session.timeZone": "UTC",
    "spark.sql.sources.partitionColumnTypeInference.enabled": "false",
    "spark.sql.execution.arrow.pyspark.enabled": "true",
    "spark.sql.execution.arrow.pyspark.fallback.enabled": "true",
    "spark.sql.adaptive.enabled": "true",
    "spark.sql.parquet.outputTimestampType": "TIMESTAMP_MICROS",
    "spark.ui.enabled": "false",
    "spark.ui.showConsoleProgress": "false",
    "spark.driver.extraJavaOptions": "-Duser.timezone=UTC",
    "spark.executor.extraJavaOptions": "-Duser.timezone=UTC",
}


#: Only for a local master: bind to loopback, run Python workers on this interpreter (the
#: project's environment, not whatever ``python3`` is on PATH, also set for every master in
#: :func:`spark_session`), skip shuffle compression,
#: which costs CPU to save disk bandwidth a single machine does not lack (~10% of a 10M-row join),
#: and list partition folders on the driver.
_LOCAL_CONF: dict[str, str] = {
    "spark.driver.host": "127.0.0.1",
    "spark.driver.bindAddress": "127.0.0.1",
    "spark.pyspark.python": sys.executable,
    "spark.pyspark.driver.python": sys.executable,
    "spark.shuffle.compress": "false",
    "spark.shuffle.spill.compress": "false",
    # Above this many folders Spark lists partitions with a distributed job (seconds for a
    # year of daily partitions); on one machine the driver lists them in milliseconds.
    "spark.sql.sources.parallelPartitionDiscovery.threshold": "100000",
}


_SETTING_KEYS = ("spark.master", "spark.remote", "spark.driver.memory", "spark.sql.shuffle.partitions")


def settings_conf(settings: SparkSettings) -> dict[str, str]:
    """``settings`` as Spark configuration keys: what the Feast offline store config carries, so a
    session the offline store starts on first use has tidemark's settings (see :func:`conf_settings`).
    A Spark Connect master (``sc://``) is ``spark.remote``, the key PySpark's builder takes for it."""
    where = "spark.remote" if settings.master.startswith("sc://") else "spark.master"
    return {where: settings.master, "spark.driver.memory": settings.driver_memory,
            "spark.sql.shuffle.partitions": str(settings.shuffle_partitions), **settings.extra_conf}


def conf_settings(conf: Mapping[str, str]) -> SparkSettings:
    """The inverse of :func:`settings_conf` (keys it lacks keep their defaults)."""
    default = SparkSettings()
    return SparkSettings(master=conf.get("spark.remote") or conf.get("spark.master", default.master),
                         driver_memory=conf.get("spark.driver.memory", default.driver_memory),
                         shuffle_partitions=int(conf.get("spark.sql.shuffle.partitions", default.shuffle_partitions)),
                         extra_conf={k: v for k, v in conf.items() if k not in _SETTING_KEYS})


def spark_session(settings: SparkSettings | None = None) -> SparkSession:
    """Return the active Spark session, or start (or connect to) one configured for tidemark.

    ``settings.master``: ``local[*]`` and other classic masters (``spark://``, ``yarn``,
    ``k8s://``) start a classic session; ``sc://host:15002`` connects to a Spark Connect server,
    as does ``SPARK_REMOTE`` in the environment (PySpark's own switch). An already running
    session (a notebook's, a test fixture's) is reused as it is: tidemark's code does not depend
    on the session time zone or on partition type inference (it compares epoch microseconds and
    names partition folders itself).

    Off a local master, the executors run tidemark's own functions (materialization writes to
    Redis from them): this session ships tidemark's packages to them (:func:`ship_packages`).
    Their third-party dependencies must be installed where they run (README, production).
    """
    require("pyspark", "spark", "starting Spark (feature builds, training frames, materialization)")
    from pyspark.sql import SparkSession

    settings = settings or SparkSettings()
    active = SparkSession.getActiveSession()
    if active is not None:
        if not is_local(active):  # started by other code (Feast's Spark source, a notebook)
            ship_packages(active)
        return active
    remote = _remote_url(settings)
    if remote is not None:
        return _connect(remote, settings)
    builder = SparkSession.builder.master(settings.master).appName("tidemark")
    builder = builder.config("spark.driver.memory", settings.driver_memory)
    builder = builder.config("spark.sql.shuffle.partitions", str(settings.shuffle_partitions))
    spark_environment(settings.extra_conf)
    local = _LOCAL_CONF if settings.master.startswith("local") else {}
    for key, value in {**BASE_CONF, **local, **settings.extra_conf}.items():
        builder = builder.config(key, value)
    session = builder.getOrCreate()
    session.sparkContext.setLogLevel("ERROR")
    if not local:
        ship_packages(session)
    log.info("started Spark %s on %s", session.version, settings.master)
    return session


def spark_environment(conf: Mapping[str, str] | None = None) -> None:
    """Export what PySpark reads from the environment, not from a session's conf, whoever starts
    the session (Feast's Spark source starts a plain one of its own when none is active):

    * ``PYSPARK_PYTHON``, the interpreter of the Python workers (unset, they run ``python3``
      from PATH, which lacks this environment's packages): ``spark.pyspark.python`` of ``conf``
      (the workers' own path to the project's environment on a cluster), else an exported
      ``PYSPARK_PYTHON``, else this interpreter;
    * ``SPARK_REMOTE`` for a Spark Connect master (``spark.master: sc://…``), so that every
      session of the process is a Connect session on it, Feast's included.
    """
    conf = conf or {}
    os.environ["PYSPARK_PYTHON"] = conf.get("spark.pyspark.python") or os.environ.get("PYSPARK_PYTHON") or sys.executable
    master = conf.get("spark.remote") or conf.get("spark.master", "")
    if master.startswith("sc://"):
        os.environ.setdefault("SPARK_REMOTE", master)


def is_connect(spark: SparkSession) -> bool:
    """Whether ``spark`` is a Spark Connect session (no SparkContext, no JVM in this process)."""
    return type(spark).__module__.startswith("pyspark.sql.connect")


def is_local(spark: SparkSession) -> bool:
    """Whether ``spark``'s executors run on this machine with this environment (a local master)."""
    return not is_connect(spark) and (spark.sparkContext.master or "").startswith("local")


def default_parallelism(spark: SparkSession) -> int:
    """How many tasks the cluster runs at once (Spark Connect: ``spark.default.parallelism`` if the
    server sets it, else this machine's cores, a lower bound for any cluster worth connecting to)."""
    if not is_connect(spark):
        return int(spark.sparkContext.defaultParallelism)
    configured = spark.conf.get("spark.default.parallelism", None)
    return int(configured) if configured else (os.cpu_count() or 2)


def _remote_url(settings: SparkSettings) -> str | None:
    if settings.master.startswith("sc://"):
        return settings.master
    remote = os.environ.get("SPARK_REMOTE")
    if remote and settings.master != SparkSettings().master:
        # a Connect URL's parameters may hold its token (sc://host:15002/;token=…): the host only
        log.warning("SPARK_REMOTE=%s is set: connecting there; the master %s is not used",
                    remote.split(";", 1)[0], settings.master)
    return remote or None


def _connect(url: str, settings: SparkSettings) -> SparkSession:
    """A Spark Connect session on ``url``, with tidemark's session SQL settings (the server owns the
    rest: its master, memory and Python)."""
    from pyspark.sql import SparkSession

    builder = SparkSession.builder.remote(url).appName("tidemark")
    conf = {**BASE_CONF, "spark.sql.shuffle.partitions": str(settings.shuffle_partitions), **settings.extra_conf}
    for key, value in conf.items():
        if key.startswith("spark.sql."):
            builder = builder.config(key, value)
    session = builder.getOrCreate()
    ship_packages(session)
    log.info("connected to Spark %s at %s", session.version, url.split(";", 1)[0])
    return session


#: tidemark's top-level packages: what the executors import when they run its functions
PACKAGES = ("tidemark", "features", "monitoring", "serving", "pipelines", "examples")


def ship_packages(spark: SparkSession) -> Path:
    """Send tidemark's packages to ``spark``'s executors as one zip on their ``sys.path``
    (``SparkContext.addPyFile``, or ``addArtifacts`` on Spark Connect). Returns the zip, built
    once per content under the temp folder. Their own dependencies (pandas, pyarrow, redis, feast)
    must be installed on the workers: ``pip install 'tidemark[spark]'`` there.
    """
    archive = packages_zip()
    key = (id(spark) if is_connect(spark) else spark.sparkContext.applicationId, archive.name)
    if key in _SHIPPED:
        return archive
    if is_connect(spark):
        spark.addArtifacts(str(archive), pyfile=True)
    else:
        spark.sparkContext.addPyFile(str(archive))
    _SHIPPED.add(key)
    log.info("shipped tidemark's packages to the executors (%s)", archive.name)
    return archive


_SHIPPED: set[tuple[object, str]] = set()  # (session or application, zip) already sent


def packages_zip() -> Path:
    """A zip of :data:`PACKAGES`' ``.py`` files, named by its content's SHA-256 (same code, same
    file, so a session adds it once however often it is asked)."""
    import hashlib
    import importlib.util
    import tempfile
    import zipfile

    files: list[tuple[str, Path]] = []
    for package in PACKAGES:
        spec = importlib.util.find_spec(package)
        for root in (spec.submodule_search_locations or []) if spec else []:
            base = Path(root).parent
            files += [(p.relative_to(base).as_posix(), p) for p in sorted(Path(root).rglob("*.py"))
                      if "__pycache__" not in p.parts]
    digest = hashlib.sha256()
    for name, path in files:
        digest.update(name.encode() + b"\0" + path.read_bytes() + b"\0")
    target = Path(tempfile.gettempdir()) / f"tidemark-packages-{digest.hexdigest()[:16]}.zip"
    if not target.exists():
        partial = target.with_suffix(f".{os.getpid()}.tmp")
        with zipfile.ZipFile(partial, "w", zipfile.ZIP_DEFLATED) as zf:
            for name, path in files:
                zf.writestr(zipfile.ZipInfo(name, date_time=(1980, 1, 1, 0, 0, 0)), path.read_bytes())
        partial.replace(target)
    return target
