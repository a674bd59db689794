"""The drift job's MLflow runs, on a real SQLite tracking store: one run per model, champion version
and UTC day, each window's metrics at its step, its files under its own path, the day's tags."""

from __future__ import annotations

import html
import json
import re
from collections.abc import Iterator
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import pytest

from monitoring.drift import DriftReport, ReferenceProfile, compare
from pipelines.drift_job import DriftOutcome, DriftPolicy, log_window
from pipelines.drift_runs import DriftWindow, day_run

ROWS = 1_000
POLICY = DriftPolicy(min_rows=100, drift_share=0.3, html_rows=500)


def _hour(day: int, hour: int) -> DriftWindow:
    start = pd.Timestamp(datetime(2026, 12, day, hour, tzinfo=UTC))
    return DriftWindow(start, start + pd.Timedelta(hours=1))


@pytest.fixture(scope="module")
def data() -> dict[str, Any]:
    rng = np.random.default_rng(5)

    def frame(shift: float) -> pd.DataFrame:
        return pd.DataFrame({"a": rng.normal(shift, 1, ROWS), "b": rng.normal(0, 1, ROWS), "c": rng.gamma(2, 2, ROWS),
                             "channel": rng.choice(["web", "app"], ROWS)})

    profile = ReferenceProfile.fit(frame(0.0))
    return {"profile": profile, "healthy": frame(0.0), "shifted": frame(2.0).assign(b=lambda f: f["b"] + 2)}


@pytest.fixture(scope="module")
def client(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Any]:
    """A real MLflow tracking store (SQLite), one for the module: each test makes its own experiment."""
    import mlflow
    from mlflow import MlflowClient

    previous = mlflow.get_tracking_uri()
    mlflow.set_tracking_uri(f"sqlite:///{tmp_path_factory.mktemp('mlflow')}/mlflow.db")
    try:
        yield MlflowClient()
    finally:
        mlflow.set_tracking_uri(previous)


def _judge(client: Any, experiment: str, window: DriftWindow, current: pd.DataFrame, data: dict[str, Any],
           folder: Path) -> tuple[DriftOutcome, DriftReport]:
    """What ``monitor`` does after reading the log: compare, decide by the share rule, log the window."""
    report = compare(data["profile"], current)
    drifted = report.drift_share >= POLICY.drift_share
    outcome = DriftOutcome("drift" if drifted else "no_drift", [f"share {report.drift_share:.2f}"],
                           window.start.to_pydatetime(), window.end.to_pydatetime(), "3", len(current),
                           report.drifted_columns, report.drift_share, model="m", drift_judged=True)
    log_window(client, day_run(client, experiment, "m", "3", window), window, outcome, report, current.head(500),
               data["profile"], POLICY, folder / window.label)
    return outcome, report


@pytest.mark.integration
def test_three_windows_over_two_days_make_two_runs_charted_by_step(client: Any, data: dict[str, Any],
                                                                   tmp_path: Path) -> None:
    experiment = client.create_experiment(tmp_path.name, artifact_location=(tmp_path / "art").as_uri())
    windows = [_hour(7, 10), _hour(7, 23), _hour(8, 0)]
    judged = [_judge(client, experiment, w, data[kind], data, tmp_path)
              for w, kind in zip(windows, ["healthy", "shifted", "healthy"], strict=True)]
    runs = {r.data.tags["tidemark.drift_day"]: r for r in client.search_runs([experiment])}
    assert set(runs) == {"2026-12-07", "2026-12-08"}
    first, second = runs["2026-12-07"], runs["2026-12-08"]
    assert first.info.run_name == "drift m v3 2026-12-07" and second.info.run_name == "drift m v3 2026-12-08"
    assert {first.info.status, second.info.status} == {"FINISHED"}
    assert [o.run_id for o, _ in judged] == [first.info.run_id, first.info.run_id, second.info.run_id]

    history = sorted(client.get_metric_history(first.info.run_id, "drift.share_drifted"), key=lambda m: m.step)
    assert [(m.step, m.timestamp) for m in history] == [(660, int(windows[0].end.timestamp() * 1000)),
                                                        (1440, int(windows[1].end.timestamp() * 1000))]
    assert [m.value for m in history] == [judged[0][1].drift_share, judged[1][1].drift_share]
    assert [(m.step, m.value) for m in client.get_metric_history(second.info.run_id, "drift.share_drifted")] == [
        (60, judged[2][1].drift_share)]
    assert [m.step for m in client.get_metric_history(first.info.run_id, "rows")] == [660, 1440]

    # the tags: the newest window's verdict and the day's count; files per window
    assert judged[0][0].decision == "no_drift" and judged[1][0].decision == "drift"
    tags = first.data.tags
    assert (tags["drift.window"], tags["drift.decision"], tags["drift.day.drifted_windows"]) == ("2300-2400", "drift", "1")
    assert tags["drift.day.windows"] == "1000-1100,2300-2400" and tags["drift.day.drifted"] == "2300-2400"
    files = {a.path for a in client.list_artifacts(first.info.run_id, "windows/2300-2400")}
    assert {f"windows/2300-2400/{n}" for n in ("decision.json", "report.json", "report.html", "drift.png")} <= files
    decision = json.loads(Path(client.download_artifacts(first.info.run_id, "windows/1000-1100/decision.json",
                                                         str(tmp_path))).read_text())
    assert decision["decision"] == "no_drift" and decision["interval_end"] == "2026-12-07T11:00:00+00:00"


@pytest.mark.integration
def test_a_rejudged_window_reuses_its_run_and_step(client: Any, data: dict[str, Any], tmp_path: Path) -> None:
    """An Airflow retry on the same data adds nothing; new data at the same window replaces its
    verdict in the tags, and its step then holds both values (MLflow keeps every logged point)."""
    experiment = client.create_experiment(tmp_path.name, artifact_location=(tmp_path / "art").as_uri())
    window = _hour(7, 10)
    for _ in range(2):
        _judge(client, experiment, window, data["healthy"], data, tmp_path)
    (run,) = client.search_runs([experiment])
    assert len(client.get_metric_history(run.info.run_id, "drift.share_drifted")) == 1
    assert run.data.tags["drift.day.drifted_windows"] == "0"
    _judge(client, experiment, window, data["shifted"], data, tmp_path)
    (run,) = client.search_runs([experiment])
    assert [m.step for m in client.get_metric_history(run.info.run_id, "drift.share_drifted")] == [660, 660]
    assert (run.data.tags["drift.decision"], run.data.tags["drift.day.drifted_windows"]) == ("drift", "1")
    # an older window judged later leaves the newest window's summary alone
    _judge(client, experiment, _hour(7, 9), data["healthy"], data, tmp_path)
    (run,) = client.search_runs([experiment])
    assert (run.data.tags["drift.window"], run.data.tags["drift.decision"]) == ("1000-1100", "drift")
    assert run.data.tags["drift.day.windows"] == "0900-1000,1000-1100"


@pytest.mark.integration
def test_the_html_report_gives_the_decisions_count_and_threshold(client: Any, data: dict[str, Any],
                                                                 tmp_path: Path) -> None:
    experiment = client.create_experiment(tmp_path.name, artifact_location=(tmp_path / "art").as_uri())
    window = _hour(7, 10)
    outcome, report = _judge(client, experiment, window, data["shifted"], data, tmp_path)
    page = html.unescape((tmp_path / window.label / "report.html").read_text(encoding="utf-8"))
    table = re.search(r'<table id="tidemark-verdicts" ([^>]*)>', page)  # the decision's figures, as data
    assert table is not None
    attrs = dict(re.findall(r'data-([\w-]+)="([^"]*)"', table[1]))
    assert int(attrs["drifted"]) == len(outcome.drifted_columns) == len(report.drifted_columns) > 0
    assert int(attrs["columns"]) == len(report.columns)
    assert float(attrs["share-threshold"]) == POLICY.drift_share and attrs["decision"] == outcome.decision
    assert f"tidemark's decision: drift. {len(report.drifted_columns)} of {len(report.columns)} columns" in page
    assert f"Dataset drift detection threshold is {POLICY.drift_share}" in page  # Evidently's, set to tidemark's
    assert page.index("tidemark-verdicts") < page.index("Evidently's dashboard below shows its own tests")


def test_a_window_belongs_to_the_day_of_its_last_instant() -> None:
    late, early = _hour(7, 23), _hour(8, 0)
    assert (late.day.isoformat(), late.step, late.label) == ("2026-12-07", 1440, "2300-2400")
    assert (early.day.isoformat(), early.step, early.artifact_path) == ("2026-12-08", 60, "windows/0000-0100")
    across = DriftWindow(pd.Timestamp("2026-12-07T23:30Z"), pd.Timestamp("2026-12-08T00:30Z"))
    assert (across.day.isoformat(), across.step, across.label) == ("2026-12-08", 30, "20261207T2330-0030")
