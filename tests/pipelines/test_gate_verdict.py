"""The gate's verdict as people read it: the reason states the rule and margin of a pass, and the
verdict lands in the model version's description (on a real SQLite MLflow) after the text from
registration."""

from __future__ import annotations

from pathlib import Path

import mlflow
import pandas as pd

from pipelines import model_registry
from pipelines.gate import GateConfig, GateVerdict, _comparisons
from tidemark.settings import Settings, SparkSettings


def test_a_pass_states_each_metric_its_margin_and_the_allowed_tolerance():
    new = {"pr_auc": 0.4724, "roc_auc": 0.9012}
    old = {"pr_auc": 0.4752, "roc_auc": 0.9001}
    assert _comparisons("binary", new, old, GateConfig()) == [
        "pr_auc 0.4724 vs champion 0.4752, drop 0.0028 within allowed 0.01",
        "roc_auc 0.9012 vs champion 0.9001, no drop"]
    assert _comparisons("regression", {"rmse": 10.1}, {"rmse": 10.0}, GateConfig()) == [
        "rmse 10.1000 vs champion 10.0000, increase 1.0% within allowed 2%"]


class _Constant(mlflow.pyfunc.PythonModel):
    def predict(self, context, model_input):
        return [0.5] * len(model_input)


def test_the_verdict_is_appended_to_the_version_description_and_replaced_by_the_next(tmp_path: Path):
    settings = Settings(home=tmp_path / "home", spark=SparkSettings())
    ml = model_registry.connect(settings)
    with mlflow.start_run(experiment_id=model_registry.experiment_id(ml, settings, "m")) as run:
        info = mlflow.pyfunc.log_model(name="model", python_model=_Constant())
        version = model_registry.register(ml, "m", info.model_uri, run_id=run.info.run_id, tags={},
                                          description="binary model on 3 features; registered with register_model")
    when = pd.Timestamp("2026-11-01", tz="UTC")
    for pr_auc in (0.47, 0.40):
        verdict = GateVerdict(pr_auc > 0.45, f"pass: pr_auc {pr_auc:.4f} vs champion 0.4752", str(version.version), "1",
                              when, when + pd.Timedelta(days=7), 5_000, 60)
        model_registry.record_gate(ml, "m", str(version.version), verdict.tags(), description=verdict.description())
    text = ml.get_model_version("m", str(version.version)).description
    assert text == ("binary model on 3 features; registered with register_model\n\nEvaluation gate: v1 against "
                    "champion v1: pass: pr_auc 0.4000 vs champion 0.4752 (window 2026-11-01 00:00 to 2026-11-08 00:00 "
                    "UTC, 5,000 labelled rows, 60 positive).")
    assert ml.get_model_version("m", str(version.version)).tags["gate.verdict"] == "fail"
