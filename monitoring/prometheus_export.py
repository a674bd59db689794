"""A drift run's results for Prometheus: a node_exporter textfile, and a Pushgateway push.

    DriftRun (model, decision, rows, policy share, report) ──► drift_registry ──► CollectorRegistry
        ├─► write_textfile: <dir>/tidemark_drift_<model>.prom, replaced atomically (temp file + rename),
        │   read by node_exporter's ``--collector.textfile.directory``
        └─► push: PUT to a Pushgateway, job "tidemark_drift", grouping key {model}

One file and one push group per model: the drift DAG checks models in parallel tasks, and each
rewrites only its own. :func:`publish` never raises: a drift run must not fail because the
monitoring system is away; it logs a warning instead.

Metrics (gauges, labels ``model`` and as shown):

    tidemark_drift_share                   share of profiled columns that drifted (when judged)
    tidemark_drift_share_threshold         the policy's share at which the run decides "drift"
    tidemark_drift_columns                 profiled columns compared (when judged)
    tidemark_drift_columns_drifted         how many of them drifted (when judged)
    tidemark_drift_rows                    champion rows in the interval
    tidemark_drift_decision{decision}      1 for the run's decision, 0 for the others
    tidemark_drift_last_run_timestamp_seconds   when the run finished, unix seconds
    tidemark_drift_statistic{column,test}  psi, ks (KS D) or chi2 (the chi² statistic) per column
    tidemark_drift_column_drifted{column}  1 if the column drifted, else 0
"""

from __future__ import annotations

import logging
import math
import re
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from prometheus_client import CollectorRegistry
    from prometheus_client.core import Metric

    from monitoring.drift import DriftReport

__all__ = ["DECISIONS", "DRIFT_METRICS", "PUSH_JOB", "DriftRun", "drift_registry", "publish", "push",
           "textfile_path", "write_textfile"]

log = logging.getLogger(__name__)

DECISIONS: tuple[str, ...] = ("drift", "no_drift", "insufficient_data")
PUSH_JOB = "tidemark_drift"
#: (name, type, labels) of every metric above, for the tests that check what rules and dashboards query.
DRIFT_METRICS: tuple[tuple[str, str, tuple[str, ...]], ...] = (
    ("tidemark_drift_share", "gauge", ("model",)),
    ("tidemark_drift_share_threshold", "gauge", ("model",)),
    ("tidemark_drift_columns", "gauge", ("model",)),
    ("tidemark_drift_columns_drifted", "gauge", ("model",)),
    ("tidemark_drift_rows", "gauge", ("model",)),
    ("tidemark_drift_decision", "gauge", ("model", "decision")),
    ("tidemark_drift_last_run_timestamp_seconds", "gauge", ("model",)),
    ("tidemark_drift_statistic", "gauge", ("model", "column", "test")),
    ("tidemark_drift_column_drifted", "gauge", ("model", "column")),
)
_UNSAFE = re.compile(r"[^A-Za-z0-9_.-]")


@dataclass(frozen=True)
class DriftRun:
    """What one drift run found. ``finished_at``: unix seconds. ``report``: None when the inputs
    were not judged (too few rows); the share and column metrics are then left out."""

    model: str
    decision: str
    rows: int
    share_threshold: float
    finished_at: float
    report: DriftReport | None = None


class _DriftCollector:
    def __init__(self, run: DriftRun) -> None:
        self.run = run

    def collect(self) -> Iterator[Metric]:
        from prometheus_client.core import GaugeMetricFamily

        run, model = self.run, [self.run.model]

        def gauge(name: str, doc: str, value: float) -> GaugeMetricFamily:
            family = GaugeMetricFamily(name, doc, labels=["model"])
            family.add_metric(model, value)
            return family

        yield gauge("tidemark_drift_share_threshold", "Share of drifted columns at which a drift run decides "
                    "'drift'", run.share_threshold)
        yield gauge("tidemark_drift_rows", "Champion rows in the drift run's interval", run.rows)
        yield gauge("tidemark_drift_last_run_timestamp_seconds", "When the last drift run finished, unix seconds",
                    run.finished_at)
        decision = GaugeMetricFamily("tidemark_drift_decision", "1 for the last drift run's decision",
                                     labels=["model", "decision"])
        for name in dict.fromkeys((*DECISIONS, run.decision)):
            decision.add_metric([run.model, name], 1.0 if name == run.decision else 0.0)
        yield decision
        if run.report is not None:
            yield from self._report(run.report)

    def _report(self, report: DriftReport) -> Iterator[Metric]:
        from prometheus_client.core import GaugeMetricFamily

        model = self.run.model
        for name, doc, value in (
                ("tidemark_drift_share", "Share of profiled columns that drifted", report.drift_share),
                ("tidemark_drift_columns", "Profiled columns compared", len(report.columns)),
                ("tidemark_drift_columns_drifted", "Profiled columns that drifted", len(report.drifted_columns))):
            family = GaugeMetricFamily(name, doc, labels=["model"])
            family.add_metric([model], float(value))
            yield family
        statistic = GaugeMetricFamily("tidemark_drift_statistic", "Drift statistic per column: psi, ks (KS D) or "
                                      "chi2 (the chi-squared statistic)", labels=["model", "column", "test"])
        drifted = GaugeMetricFamily("tidemark_drift_column_drifted", "1 if the column drifted",
                                    labels=["model", "column"])
        for c in report.columns:
            drifted.add_metric([model, c.column], 1.0 if c.drifted else 0.0)
            for test, stat in (("psi", c.psi), (c.test, c.statistic)):
                if test is not None and stat is not None and math.isfinite(stat):
                    statistic.add_metric([model, c.column, test], float(stat))
        yield from (statistic, drifted)


def drift_registry(run: DriftRun) -> CollectorRegistry:
    """A registry holding only ``run``'s metrics (nothing of this process)."""
    from prometheus_client import CollectorRegistry

    registry = CollectorRegistry(auto_describe=False)
    registry.register(_DriftCollector(run))
    return registry


def textfile_path(folder: Path, model: str) -> Path:
    """``<folder>/tidemark_drift_<model>.prom``, characters unsafe in a file name as ``_``."""
    return folder / f"tidemark_drift_{_UNSAFE.sub('_', model)}.prom"


def write_textfile(run: DriftRun, folder: Path) -> Path:
    """Write ``run``'s metrics to :func:`textfile_path` atomically: node_exporter never reads half a
    file. The file's mode follows the process umask (``TIDEMARK_UMASK``). Returns the path."""
    from prometheus_client import write_to_textfile

    folder.mkdir(parents=True, exist_ok=True)
    path = textfile_path(folder, run.model)
    write_to_textfile(str(path), drift_registry(run))  # a temp file beside it, then rename(2)
    return path


def push(run: DriftRun, gateway: str, *, timeout_s: float = 10.0) -> None:
    """Replace the group ``{job="tidemark_drift", model=...}`` on the Pushgateway at ``gateway``
    (``http://host:9091``) with ``run``'s metrics. Raises ``OSError`` (``URLError``) on failure."""
    from prometheus_client import push_to_gateway

    push_to_gateway(gateway, job=PUSH_JOB, registry=drift_registry(run), grouping_key={"model": run.model},
                    timeout=timeout_s)


def publish(run: DriftRun, *, textfile_dir: Path | None, pushgateway_url: str | None) -> list[str]:
    """Write the textfile (unless ``textfile_dir`` is None) and push (if ``pushgateway_url`` is set).
    Never raises: each failure is logged as a warning and returned as one line."""
    problems = []
    if textfile_dir is not None:
        try:
            write_textfile(run, textfile_dir)
        except OSError as exc:
            problems.append(f"writing the drift metrics under {textfile_dir} failed: {exc}")
    if pushgateway_url:
        try:
            push(run, pushgateway_url)
        except (OSError, ValueError) as exc:  # URLError, HTTPError, timeouts; ValueError: a malformed URL
            problems.append(f"pushing the drift metrics of {run.model!r} to the Pushgateway failed: {exc}")
    for line in problems:
        log.warning("%s (the drift run itself succeeded)", line)
    return problems
