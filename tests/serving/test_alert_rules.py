"""The Prometheus rules in deploy/prometheus: valid PromQL over metrics tidemark exports, each
alert documented, and (where promtool is installed) checked and unit-tested by Prometheus' own tool."""

from __future__ import annotations

import re
import shutil
import subprocess
from pathlib import Path

import pytest
import yaml

from tests.serving.promql_queries import unknown_reads

ROOT = Path(__file__).resolve().parents[2]
RULES = ROOT / "deploy" / "prometheus" / "tidemark-alerts.yml"
RULE_TESTS = ROOT / "deploy" / "prometheus" / "tidemark-alerts.test.yml"
RUNBOOK = ROOT / "docs" / "alerts.md"
PROMTOOL = shutil.which("promtool")
needs_promtool = pytest.mark.skipif(PROMTOOL is None, reason="promtool is not installed (Debian: apt-get install prometheus)")


def _rules() -> list[dict]:
    return [rule for group in yaml.safe_load(RULES.read_text())["groups"] for rule in group["rules"]]


def _alerts() -> list[dict]:
    return [rule for rule in _rules() if "alert" in rule]


def _recorded() -> frozenset[str]:
    return frozenset(rule["record"] for rule in _rules() if "record" in rule)


def test_the_rules_cover_what_the_canary_and_the_issue_ask_for():
    names = {rule["alert"] for rule in _alerts()}
    assert {"TidemarkChampionErrorRateHigh", "TidemarkChallengerErrorRateAboveChampion", "TidemarkPredictP99OverSLO",
            "TidemarkChallengerP99AboveChampion", "TidemarkNoChampionLoaded", "TidemarkServingDown",
            "TidemarkServingAbsent", "TidemarkOnlineStoreDown", "TidemarkPredictionLogDroppingRows",
            "TidemarkShadowDroppingBatches", "TidemarkModelRefreshStale", "TidemarkDriftShareHigh"} <= names
    assert len(names) == len(_alerts()), "alert names repeat"


@pytest.mark.parametrize("rule", _rules(), ids=lambda r: r.get("alert") or r["record"])
def test_every_expression_is_promql_over_exported_metrics(rule):
    # recording rules are read by name, so a rule may use one defined anywhere in the file
    assert unknown_reads(rule["expr"], _recorded()) == []


@pytest.mark.parametrize("alert", _alerts(), ids=lambda r: r["alert"])
def test_every_alert_says_how_bad_what_and_where_to_read_more(alert):
    assert alert["labels"]["severity"] in {"critical", "warning"}
    assert {"summary", "description", "runbook_url"} <= set(alert["annotations"])
    # the runbook link is a heading of docs/alerts.md (GitHub's anchor: the heading, lower case)
    page, _, anchor = alert["annotations"]["runbook_url"].partition("#")
    assert page == "docs/alerts.md" and anchor == alert["alert"].lower()
    headings = {h.strip().lower() for h in re.findall(r"^## (.+)$", RUNBOOK.read_text(), flags=re.MULTILINE)}
    assert anchor in headings, f"docs/alerts.md has no section '## {alert['alert']}'"


def test_thresholds_match_the_canary_policy_and_the_slo():
    from monitoring.rollout import CanaryPolicy
    from tidemark.settings import Settings

    exprs = {rule["alert"]: rule["expr"] for rule in _alerts()}
    ratio = Settings.canary_max_p99_ratio
    assert ratio == CanaryPolicy.max_p99_ratio
    assert re.search(rf">\s*{re.escape(str(ratio))}\s*$", exprs["TidemarkChallengerP99AboveChampion"].strip())
    assert re.search(r">\s*0\.005\b", exprs["TidemarkPredictP99OverSLO"])  # 5 ms, the serving goal of issue 18


def test_a_broken_expression_is_caught():
    with pytest.raises(ValueError):
        unknown_reads("sum by (model) (rate(tidemark_scored_rows_total[5m])")
    assert unknown_reads("rate(tidemark_scored_row_total[5m])") == ["metric 'tidemark_scored_row_total'"]
    assert unknown_reads('tidemark_online_store_up{model="m"}') == ["label(s) ['model'] of 'tidemark_online_store_up'"]


@needs_promtool
def test_promtool_checks_the_rules():
    result = subprocess.run([PROMTOOL, "check", "rules", str(RULES)], check=False, capture_output=True, text=True, timeout=60)
    assert result.returncode == 0, result.stdout + result.stderr
    assert f"SUCCESS: {len(_rules())} rules found" in result.stdout


@needs_promtool
def test_promtool_unit_tests_fire_the_alerts_they_should():
    result = subprocess.run([PROMTOOL, "test", "rules", RULE_TESTS.name], check=False, cwd=RULE_TESTS.parent,
                            capture_output=True, text=True, timeout=120)
    assert result.returncode == 0, result.stdout + result.stderr
    assert "SUCCESS" in result.stdout
