"""Which optional parts of tidemark are installed, and the error that says how to add one.

tidemark installs in parts (``pyproject.toml``'s extras), so that a node gets only what it runs:

    pip install tidemark                 the notebook SDK: Feast definitions, online reads, MLflow registry
    pip install 'tidemark[serving]'      + the HTTP server (Starlette, uvicorn, Prometheus) and PyTorch
    pip install 'tidemark[spark]'        + PySpark: feature builds, training frames, materialization
    pip install 'tidemark[monitoring]'   + Evidently: the drift report's HTML page
    pip install 'tidemark[airflow]'      + Apache Airflow: the DAGs and ``tidemark airflow``
    pip install 'tidemark[postgres]'     + psycopg, for MLflow or Airflow on PostgreSQL
    pip install 'tidemark[all]'          everything (what ``make install`` installs, with the dev tools)

Code that needs a part calls :func:`require` where it first needs it (not at import time), so a
serving node without Spark fails only if it is asked to build features, and says what to install.
"""

from __future__ import annotations

import importlib.util

from tidemark.errors import TidemarkError

__all__ = ["EXTRAS", "MissingExtraError", "require"]

#: extra -> the import names it provides (the first is the one :func:`require` checks)
EXTRAS: dict[str, tuple[str, ...]] = {
    "serving": ("uvicorn", "starlette", "prometheus_client", "torch"),
    "spark": ("pyspark",),
    "monitoring": ("evidently",),
    "airflow": ("airflow",),
    "postgres": ("psycopg",),
}


class MissingExtraError(TidemarkError, ImportError):
    """An optional part of tidemark is needed here but not installed."""


def require(module: str, extra: str, purpose: str) -> None:
    """Raise :class:`MissingExtraError` unless ``module`` can be imported.

    ``extra`` is the extra that installs it (a key of :data:`EXTRAS`); ``purpose`` says what the
    caller was about to do, for the message ("building features", "writing the drift report").
    """
    if extra not in EXTRAS:
        raise ValueError(f"unknown extra {extra!r}; known: {', '.join(EXTRAS)}")
    if importlib.util.find_spec(module) is None:
        raise MissingExtraError(f"{purpose} needs {module}, which is not installed here: "
                                f"pip install 'tidemark[{extra}]' (or 'tidemark[all]')")
