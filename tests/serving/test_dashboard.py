"""The Grafana dashboard in deploy/grafana: importable JSON whose every query is PromQL over metrics
tidemark exports, every panel on the ``${datasource}`` variable."""

from __future__ import annotations

import json
import re
from pathlib import Path

import pytest

from tests.serving.promql_queries import EXPORTED, grafana_expr, unknown_reads

DASHBOARD = Path(__file__).resolve().parents[2] / "deploy" / "grafana" / "tidemark-serving.json"


def _dashboard() -> dict:
    return json.loads(DASHBOARD.read_text())


def _panels() -> list[dict]:
    return [p for p in _dashboard()["panels"] if p["type"] != "row"]


def test_it_is_a_dashboard_with_datasource_and_model_variables():
    board = _dashboard()
    assert board["schemaVersion"] >= 39 and board["uid"] == "tidemark-serving"
    variables = {v["name"]: v for v in board["templating"]["list"]}
    assert variables["datasource"]["type"] == "datasource" and variables["datasource"]["query"] == "prometheus"
    model = variables["model"]
    assert model["datasource"]["uid"] == "${datasource}"
    metric = re.fullmatch(r"label_values\((\w+), model\)", model["query"]["query"])
    assert metric and metric[1] in EXPORTED


def test_panels_have_unique_ids_a_datasource_targets_and_a_place():
    ids = [p["id"] for p in _dashboard()["panels"]]
    assert len(ids) == len(set(ids))
    for panel in _panels():
        assert panel["datasource"] == {"type": "prometheus", "uid": "${datasource}"}, panel["title"]
        assert panel["targets"], panel["title"]
        for target in panel["targets"]:
            assert target["datasource"]["uid"] == "${datasource}" and target["expr"]
        refs = [t["refId"] for t in panel["targets"]]
        assert len(refs) == len(set(refs)), panel["title"]
        grid = panel["gridPos"]
        assert grid["x"] + grid["w"] <= 24 and grid["h"] > 0, panel["title"]


def test_it_shows_what_the_issue_asks_for():
    exprs = " ".join(t["expr"] for p in _panels() for t in p["targets"])
    for metric in ("tidemark_predict_request_seconds_count", "tidemark_model_seconds_bucket",
                   "tidemark_predict_request_seconds_bucket", "tidemark_canary_weight_percent", "tidemark_canary_mode",
                   "tidemark_model_version_info", "tidemark_variant_errors_total", "tidemark_online_store_up",
                   "tidemark_online_read_seconds_bucket", "tidemark_online_read_errors_total",
                   "tidemark_prediction_log_queue_rows", "tidemark_prediction_log_dropped_rows_total",
                   "tidemark_drift_share"):
        assert metric in exprs, metric


@pytest.mark.parametrize("panel", _panels(), ids=lambda p: p["title"])
def test_every_query_is_promql_over_exported_metrics(panel):
    for target in panel["targets"]:
        assert unknown_reads(grafana_expr(target["expr"])) == [], target["expr"]
