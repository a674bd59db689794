"""Log a drift report to an MLflow run: one metric per column and statistic, plus the report files.

Metrics (at ``step``, default 0), for a column ``c`` and the default ``prefix="drift"``:

    drift.<c>.psi                  PSI (numeric and categorical)
    drift.<c>.ks_d                 KS D (numeric)
    drift.<c>.chi2                 chi² statistic (categorical)
    drift.<c>.tvd                  total variation distance (categorical)
    drift.<c>.p_value_adjusted     Benjamini–Hochberg adjusted p-value
    drift.<c>.null_share           share of null values in the current data
    drift.<c>.drifted              1 if the column drifted, else 0
    drift.share_drifted            share of profiled columns that drifted
    drift.columns_drifted          how many drifted

A statistic the report does not have (a missing column has no PSI) is not logged. Characters
MLflow rejects in a metric name become ``_``; if that (or the 250-character limit) makes a name
collide with another column's, it gets a ``_2``, ``_3`` … suffix. Renamed columns are listed in
``drift/metric_names.json``. Artifacts: ``drift/report.json``, ``drift/drift.png`` and, given the
current data and the profile, Evidently's ``drift/report.html`` (under ``artifact_path`` instead of
``drift/`` when given). One run can hold many reports: the drift job logs each window of a day at
its own ``step`` and ``timestamp_ms`` and under its own ``artifact_path``.

MLflow is imported inside :func:`mlflow_log`, so importing this module is cheap.
"""

from __future__ import annotations

import json
import logging
import math
import re
import shutil
import tempfile
import time
from pathlib import Path
from typing import TYPE_CHECKING

from monitoring.errors import MonitoringError

if TYPE_CHECKING:
    import pandas as pd
    from mlflow.entities import Metric, Run

    from monitoring.drift import ColumnDrift, DriftReport
    from monitoring.evidently_report import Verdict
    from monitoring.profile import ReferenceProfile

__all__ = ["metric_stems", "mlflow_log"]

log = logging.getLogger(__name__)

_MAX_KEY = 250                      # mlflow.utils.validation.MAX_ENTITY_KEY_LENGTH
_LONGEST_SUFFIX = ".p_value_adjusted"
_REJECTED = re.compile(r"[^\w.\- ]")  # MLflow allows / and : too, but / nests paths and : breaks Windows


def mlflow_log(report: DriftReport, run: Run | str | None = None, *, html_current: pd.DataFrame | None = None,
               profile: ReferenceProfile | None = None, prefix: str = "drift", keep_in: Path | None = None,
               step: int = 0, timestamp_ms: int | None = None, artifact_path: str | None = None,
               verdict: Verdict | None = None) -> None:
    """Log ``report`` to ``run`` (an MLflow ``Run``, a run id, or None for the active run).

    Metrics go in one ``MlflowClient.log_batch`` call (MLflow splits it into batches of 1,000),
    at ``step`` and ``timestamp_ms`` (milliseconds since the epoch; default now), or none with
    ``verdict.judged`` false; artifacts go under ``artifact_path`` (default ``<prefix>``). Pass
    ``html_current`` (a pandas DataFrame of the current data) together with ``profile`` to add
    Evidently's HTML report (on a sample, headed by tidemark's verdict; see
    :func:`monitoring.evidently_report.evidently_html`). ``keep_in``: also copy the files there.
    """
    import mlflow
    from mlflow.tracking import MlflowClient

    if (html_current is None) != (profile is None):
        raise MonitoringError("the Evidently HTML report needs both html_current (the current data as a "
                              "pandas DataFrame) and profile (its ReferenceProfile); pass both or neither")
    run_id = _run_id(run, mlflow.active_run())
    client = MlflowClient()
    stems = metric_stems([c.column for c in report.columns], prefix)
    timestamp = int(time.time() * 1000) if timestamp_ms is None else timestamp_ms
    metrics = _metrics(report, stems, prefix, timestamp, step) if verdict is None or verdict.judged else []
    client.log_batch(run_id, metrics=metrics)
    with tempfile.TemporaryDirectory(prefix="tidemark-drift-") as tmp:
        folder = Path(tmp)
        _write_files(report, folder, html_current, profile, stems, verdict)
        client.log_artifacts(run_id, str(folder), artifact_path=artifact_path or prefix)
        if keep_in is not None:  # the same files on local disk, e.g. for a browser
            shutil.copytree(folder, keep_in, dirs_exist_ok=True)
    log.info("logged %d drift metrics and the report files to MLflow run %s under %r",
             len(metrics), run_id, prefix)


def metric_stems(columns: list[str], prefix: str) -> dict[str, str]:
    """Each column's name as it appears in metric keys: valid for MLflow, unique, short enough."""
    limit = _MAX_KEY - len(prefix) - 1 - len(_LONGEST_SUFFIX)
    if limit < 8:
        raise MonitoringError(f"prefix {prefix[:40]!r}… is {len(prefix)} characters; metric names must stay "
                              f"under {_MAX_KEY}: use a shorter prefix")
    # Names MLflow takes as they are keep them; only the others can get a suffix.
    stems = {name: name for name in columns if len(name) <= limit and not _REJECTED.search(name)}
    used = set(stems)
    for name in columns:
        if name in stems:
            continue
        stem = base = _REJECTED.sub("_", name)[:limit]
        k = 2
        while stem in used:
            suffix = f"_{k}"
            stem = base[: limit - len(suffix)] + suffix
            k += 1
        used.add(stem)
        stems[name] = stem
    return {name: stems[name] for name in columns}


def _run_id(run: Run | str | None, active: Run | None) -> str:
    if run is None:
        if active is None:
            raise MonitoringError("no MLflow run to log the drift report to: pass run= (an mlflow Run or a run "
                                  "id), or start one first (with mlflow.start_run(): ...)")
        return str(active.info.run_id)
    if isinstance(run, str):
        return run
    info = getattr(run, "info", None)
    if info is None or not getattr(info, "run_id", None):
        raise MonitoringError(f"run is a {type(run).__name__}; pass an mlflow.entities.Run, a run id, or None "
                              "for the active run")
    return str(info.run_id)


def _metrics(report: DriftReport, stems: dict[str, str], prefix: str, timestamp: int, step: int) -> list[Metric]:
    from mlflow.entities import Metric

    values: dict[str, float | None] = {
        f"{prefix}.share_drifted": report.drift_share,
        f"{prefix}.columns_drifted": float(len(report.drifted_columns)),
    }
    for col in report.columns:
        for stat, value in _column_stats(col).items():
            values[f"{prefix}.{stems[col.column]}.{stat}"] = value
    return [Metric(key, float(value), timestamp, step) for key, value in values.items()
            if value is not None and math.isfinite(value)]


def _column_stats(col: ColumnDrift) -> dict[str, float | None]:
    stats: dict[str, float | None] = {"psi": col.psi}
    if col.test == "ks":
        stats["ks_d"] = col.statistic
    elif col.test == "chi2":
        stats["chi2"] = col.statistic
        stats["tvd"] = col.effect
    stats["p_value_adjusted"] = col.p_value_adjusted
    stats["null_share"] = col.null_share_current
    stats["drifted"] = 1.0 if col.drifted else 0.0
    return stats


def _write_files(report: DriftReport, folder: Path, html_current: pd.DataFrame | None,
                 profile: ReferenceProfile | None, stems: dict[str, str], verdict: Verdict | None) -> None:
    from monitoring.chart import drift_chart

    (folder / "report.json").write_text(json.dumps(report.to_dict(), indent=2), encoding="utf-8")
    drift_chart(report, folder / "drift.png")
    renamed = {name: stem for name, stem in stems.items() if name != stem}
    if renamed:
        (folder / "metric_names.json").write_text(json.dumps(renamed, indent=2), encoding="utf-8")
    if html_current is not None and profile is not None:
        from monitoring.evidently_report import evidently_html

        evidently_html(profile, html_current, folder / "report.html", report=report, verdict=verdict)
