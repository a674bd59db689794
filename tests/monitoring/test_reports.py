"""Drift reports: Evidently HTML on a sample, the PSI chart, and logging to a real MLflow store."""

from __future__ import annotations

import json
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from monitoring.chart import drift_chart
from monitoring.drift import DriftReport, ReferenceProfile, compare
from monitoring.errors import MonitoringError
from monitoring.evidently_report import reference_sample
from monitoring.mlflow_log import metric_stems
from monitoring.profile import NumericProfile

ROWS = 5_000
ODD = "amt/7d:sum"  # a name MLflow rejects in a metric key


@pytest.fixture(scope="module")
def drifted() -> tuple[ReferenceProfile, pd.DataFrame, DriftReport]:
    """A profile of 5k reference rows and a current frame where two of four columns drift."""
    rng = np.random.default_rng(7)
    reference = pd.DataFrame({
        "amount": rng.lognormal(3.0, 1.0, ROWS),
        "age": rng.normal(40, 10, ROWS),
        ODD: rng.gamma(2.0, 5.0, ROWS),
        "channel": rng.choice(["web", "app", "pos"], ROWS, p=[0.5, 0.3, 0.2]),
        "country": rng.choice(["DE", "FR", "NL"], ROWS),
    })
    reference.loc[rng.choice(ROWS, 250, replace=False), "amount"] = np.nan
    current = pd.DataFrame({
        "amount": rng.lognormal(3.6, 1.0, ROWS),                                       # drifts
        "age": rng.normal(40, 10, ROWS),
        ODD: rng.gamma(2.0, 5.0, ROWS),
        "channel": rng.choice(["web", "app", "pos", "atm"], ROWS, p=[0.2, 0.3, 0.2, 0.3]),  # drifts
        "extra": 1,
    })  # "country" is missing: schema drift
    profile = ReferenceProfile.fit(reference)
    report = compare(profile, current)
    assert set(report.drifted_columns) == {"amount", "channel", "country"}
    return profile, current, report


def test_reference_sample_follows_the_profile(drifted: tuple[ReferenceProfile, pd.DataFrame, DriftReport]) -> None:
    profile, _, _ = drifted
    sample = reference_sample(profile, 20_000, np.random.default_rng(0))
    assert sample["amount"].isna().mean() == pytest.approx(250 / ROWS, abs=1e-4)  # exact share, rounded
    assert set(sample["channel"].dropna()) == {"web", "app", "pos"}
    assert sample["channel"].value_counts(normalize=True)["web"] == pytest.approx(0.5, abs=0.02)
    age = profile.columns["age"]
    assert isinstance(age, NumericProfile)
    assert set(sample["age"]) <= set(age.support)  # values of the stored reference, nothing else
    assert sample["age"].mean() == pytest.approx(40, abs=0.5)


@pytest.mark.integration
def test_evidently_html(drifted: tuple[ReferenceProfile, pd.DataFrame, DriftReport], tmp_path: Path) -> None:
    from monitoring.evidently_report import evidently_html

    profile, current, _ = drifted
    path = evidently_html(profile, current, tmp_path / "out" / "report.html", sample_rows=2_000)
    page = path.read_text(encoding="utf-8")
    assert path.stat().st_size > 10_000
    assert "drift" in page.lower()
    assert "Not in the current data (left out): country." in page
    assert "2,000 of 5,000 rows" in page


def test_drift_chart_writes_a_png(drifted: tuple[ReferenceProfile, pd.DataFrame, DriftReport],
                                  tmp_path: Path) -> None:
    _, _, report = drifted
    path = drift_chart(report, tmp_path / "drift.png")
    data = path.read_bytes()
    assert data[:8] == b"\x89PNG\r\n\x1a\n"
    assert len(data) > 5_000


def test_metric_stems_are_valid_and_unique() -> None:
    stems = metric_stems(["a/b", "a_b", "x:y", "ok", "é ü", "c" * 300, "c" * 301], "drift")
    assert stems["a_b"] == "a_b" and stems["a/b"] == "a_b_2"  # a valid name keeps its own
    assert stems["x:y"] == "x_y" and stems["ok"] == "ok" and stems["é ü"] == "é ü"
    assert len(set(stems.values())) == 7
    assert all(len(f"drift.{s}.p_value_adjusted") <= 250 for s in stems.values())


def test_import_monitoring_does_not_import_mlflow_or_evidently() -> None:
    code = ("import sys, monitoring; assert callable(monitoring.mlflow_log); "
            "print(sorted(m for m in ('mlflow', 'evidently', 'matplotlib') if m in sys.modules))")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "[]"


@pytest.fixture
def tracking(tmp_path: Path) -> Iterator[str]:
    """A real MLflow tracking store (SQLite) with its own experiment; yields the experiment id."""
    import mlflow

    previous = mlflow.get_tracking_uri()
    mlflow.set_tracking_uri(f"sqlite:///{tmp_path}/mlflow.db")
    try:
        yield mlflow.create_experiment("drift-test", artifact_location=(tmp_path / "artifacts").as_uri())
    finally:
        mlflow.set_tracking_uri(previous)


@pytest.mark.integration
def test_mlflow_log_to_a_real_store(drifted: tuple[ReferenceProfile, pd.DataFrame, DriftReport],
                                    tracking: str, tmp_path: Path) -> None:
    import mlflow
    from mlflow.tracking import MlflowClient

    import monitoring

    profile, current, report = drifted
    with mlflow.start_run(experiment_id=tracking) as run:
        monitoring.mlflow_log(report, html_current=current.head(1_000), profile=profile)
    client = MlflowClient()
    metrics = client.get_run(run.info.run_id).data.metrics
    for col in report.columns:
        stem = "amt_7d_sum" if col.column == ODD else col.column
        assert metrics[f"drift.{stem}.drifted"] == float(col.drifted)
        if col.psi is None:
            assert f"drift.{stem}.psi" not in metrics
        else:
            assert metrics[f"drift.{stem}.psi"] == col.psi
            assert metrics[f"drift.{stem}.p_value_adjusted"] == col.p_value_adjusted
    assert metrics["drift.amount.ks_d"] == report.column("amount").statistic
    assert metrics["drift.channel.tvd"] == report.column("channel").effect
    assert metrics["drift.channel.chi2"] == report.column("channel").statistic
    assert "drift.amount.chi2" not in metrics and "drift.channel.ks_d" not in metrics
    assert metrics["drift.columns_drifted"] == 3.0
    assert metrics["drift.share_drifted"] == report.drift_share
    files = {Path(f.path).name: f.file_size for f in client.list_artifacts(run.info.run_id, "drift")}
    assert set(files) == {"report.json", "drift.png", "report.html", "metric_names.json"}
    logged = json.loads(Path(client.download_artifacts(run.info.run_id, "drift/report.json", str(tmp_path)))
                        .read_text())
    assert logged == json.loads(json.dumps(report.to_dict()))
    names = Path(client.download_artifacts(run.info.run_id, "drift/metric_names.json", str(tmp_path)))
    assert json.loads(names.read_text()) == {ODD: "amt_7d_sum"}


@pytest.mark.integration
def test_mlflow_log_needs_a_run(drifted: tuple[ReferenceProfile, pd.DataFrame, DriftReport]) -> None:
    import mlflow

    from monitoring.mlflow_log import mlflow_log

    assert mlflow.active_run() is None
    with pytest.raises(MonitoringError, match="start one first"):
        mlflow_log(drifted[2])
