"""The Prometheus metrics ``tidemark serve`` exports on ``/metrics``: one list that the server, the
alerting rules (``deploy/prometheus/``), the dashboard (``deploy/grafana/``) and their tests share.

A name is the base name, as given to ``prometheus_client``; a scrape shows a counter as
``<name>_total``, a histogram as ``<name>_bucket``, ``<name>_sum`` and ``<name>_count``
(:func:`series_names`). Under ``tidemark serve --workers N`` a scrape still gives one series per
label set: gauges are aggregated over the processes, counters and histograms summed.
"""

from __future__ import annotations

from typing import Literal, NamedTuple

__all__ = ["EXPORTED_METRICS", "ExportedMetric", "MetricType", "missing_from", "series_names"]

MetricType = Literal["counter", "gauge", "histogram"]


class ExportedMetric(NamedTuple):
    """One exported metric: its base name, its type and its label names."""

    name: str
    type: MetricType
    labels: tuple[str, ...] = ()


EXPORTED_METRICS: tuple[ExportedMetric, ...] = (
    ExportedMetric("tidemark_scored_rows", "counter", ("model", "variant")),  # variant: champion|challenger|shadow
    ExportedMetric("tidemark_model_seconds", "histogram", ("model", "variant")),  # one model call, seconds
    ExportedMetric("tidemark_score", "histogram", ("model", "variant")),
    ExportedMetric("tidemark_predict_request_seconds", "histogram", ("model", "status")),  # status: 2xx|4xx|5xx
    ExportedMetric("tidemark_push_errors", "counter", ("model", "reason")),
    ExportedMetric("tidemark_client_disconnects", "counter", ("model",)),
    ExportedMetric("tidemark_variant_errors", "counter", ("model", "variant")),  # rows a variant failed to score
    ExportedMetric("tidemark_prediction_log_dropped_rows", "counter", ("model", "reason")),
    ExportedMetric("tidemark_shadow_dropped_batches", "counter", ("model",)),
    ExportedMetric("tidemark_model_alias_missing", "gauge", ("model", "alias")),  # 1: alias gone, old model serves
    ExportedMetric("tidemark_model_version_info", "gauge", ("model", "alias", "version")),
    ExportedMetric("tidemark_model_loaded", "gauge", ("model", "alias")),  # 1: a model is loaded in the slot
    ExportedMetric("tidemark_model_last_refresh_timestamp_seconds", "gauge", ("model",)),  # last alias poll, unix s
    ExportedMetric("tidemark_canary_weight_percent", "gauge", ("model",)),  # rows routed to the challenger, %
    ExportedMetric("tidemark_canary_mode", "gauge", ("model", "mode")),  # 1 for the mode now: off|shadow|canary
    ExportedMetric("tidemark_prediction_log_queue_rows", "gauge", ("model",)),
    ExportedMetric("tidemark_online_read_seconds", "histogram", ("model",)),
    ExportedMetric("tidemark_online_read_errors", "counter", ("model",)),
    ExportedMetric("tidemark_online_corrupt_values", "counter"),
    ExportedMetric("tidemark_online_store_up", "gauge"),  # 0: circuit breaker open, reads fail at once
    ExportedMetric("tidemark_online_store_slow", "gauge"),
    ExportedMetric("tidemark_online_store_breaker_opens", "counter"),
)

_SUFFIXES: dict[str, tuple[str, ...]] = {"counter": ("_total",), "gauge": ("",),
                                         "histogram": ("_bucket", "_sum", "_count")}


def series_names(metric: ExportedMetric) -> tuple[str, ...]:
    """The sample names a scrape shows for ``metric`` (a counter's ``_created`` left out)."""
    return tuple(metric.name + suffix for suffix in _SUFFIXES[metric.type])


def missing_from(scrape: str) -> list[str]:
    """What of :data:`EXPORTED_METRICS` the Prometheus text ``scrape`` lacks or shows otherwise:
    a metric absent, of another type, or with other label names (empty when the scrape has it all)."""
    from prometheus_client.parser import text_string_to_metric_families

    families = {f.name: f for f in text_string_to_metric_families(scrape)}
    problems = []
    for metric in EXPORTED_METRICS:
        family = families.get(metric.name)
        if family is None:
            problems.append(f"{metric.name}: not exported")
            continue
        if family.type != metric.type:
            problems.append(f"{metric.name}: a {family.type}, not a {metric.type}")
        shown = {frozenset(k for k in s.labels if k != "le") for s in family.samples}
        if shown and shown != {frozenset(metric.labels)}:
            problems.append(f"{metric.name}: labels {sorted(map(sorted, shown))}, not {sorted(metric.labels)}")
    return problems
