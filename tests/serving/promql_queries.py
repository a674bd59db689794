"""What a PromQL query reads, for the tests of the alerting rules and the dashboard: every metric
name and label matcher in it (parsed with promql-parser), checked against what tidemark exports."""

from __future__ import annotations

import re

import promql_parser

from monitoring.prometheus_export import DRIFT_METRICS
from serving.metric_names import EXPORTED_METRICS, series_names

# sample name -> its metric's label names, for every series a tidemark server or drift run exports
EXPORTED: dict[str, tuple[str, ...]] = {
    **{s: m.labels for m in EXPORTED_METRICS for s in series_names(m)},
    **{name: labels for name, _, labels in DRIFT_METRICS},
}
# what Prometheus adds to every scraped series (and ``le`` to a histogram's buckets)
TARGET_LABELS = frozenset({"job", "instance", "le"})
# Grafana's variables, replaced by values of the same kind so that the query parses
GRAFANA_VARIABLES = {"$__rate_interval": "5m", "$__interval": "1m", "$__range": "1h", "$model": "m"}


def selectors(expr: str) -> list[tuple[str, set[str]]]:
    """(metric name, label names matched) of every vector selector in ``expr``; raises
    ``ValueError`` when ``expr`` is not PromQL."""
    found: list[tuple[str, set[str]]] = []

    def visit(node: object) -> None:
        if isinstance(node, promql_parser.VectorSelector):
            matchers = node.matchers.matchers
            name = node.name or next((m.value for m in matchers if m.name == "__name__"), "")
            found.append((name, {m.name for m in matchers if m.name != "__name__"}))

    promql_parser.walk(promql_parser.parse(expr), visit)
    return found


def grafana_expr(expr: str) -> str:
    """``expr`` with Grafana's variables replaced (longest name first: ``$__range`` before ``$__r…``)."""
    for variable in sorted(GRAFANA_VARIABLES, key=len, reverse=True):
        expr = expr.replace(variable, GRAFANA_VARIABLES[variable])
    assert not re.search(r"\$\w", expr), f"an unknown Grafana variable in {expr!r}"
    return expr


def unknown_reads(expr: str, recorded: frozenset[str] = frozenset()) -> list[str]:
    """What ``expr`` reads that no tidemark metric (nor a ``recorded`` rule, nor ``up``) has: a
    metric name, or a label a metric lacks. Empty when all is known."""
    problems = []
    for name, labels in selectors(expr):
        if name in recorded or name == "up":
            continue
        if name not in EXPORTED:
            problems.append(f"metric {name!r}")
            continue
        extra = labels - set(EXPORTED[name]) - TARGET_LABELS
        if extra:
            problems.append(f"label(s) {sorted(extra)} of {name!r}")
    return problems
