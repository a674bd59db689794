"""The alias history on a real MLflow registry (SQLite in tmp): promote, promote, rollback and a
second rollback that finds its target in the history; `tidemark models history` prints it."""

from __future__ import annotations

import json
import uuid
from pathlib import Path

import mlflow
import numpy as np
import pandas as pd
import pytest
import torch

from examples.fraud.model import FraudModel, ModelSpec, build_module
from examples.fraud.pyfunc import MODEL_CODE
from pipelines import alias_history, model_registry
from pipelines.errors import ModelVersionError
from tidemark.settings import Settings, SparkSettings

pytestmark = pytest.mark.integration

FRAME = pd.DataFrame({"amount": np.arange(40.0), "channel": ["pos", "ecom"] * 20})


@pytest.fixture
def settings(tmp_path: Path) -> Settings:
    return Settings(home=tmp_path / "home", spark=SparkSettings(), model_name=f"hist-{uuid.uuid4().hex[:6]}")


def _logged(settings: Settings) -> tuple[str, str]:
    """One small model logged in a run (model URI, run id); registered again for each version."""
    ml = model_registry.connect(settings)
    spec = ModelSpec.fit(FRAME, ["amount"], ["channel"], hidden=(4,), min_count=1)
    torch.manual_seed(0)
    with mlflow.start_run(experiment_id=model_registry.experiment_id(ml, settings, settings.model_name)) as run:
        info = mlflow.pyfunc.log_model(name="model", python_model=str(MODEL_CODE), pip_requirements=["tidemark"],
                                       artifacts=FraudModel(spec, build_module(spec)).save(settings.home / "m"))
    return info.model_uri, run.info.run_id


def test_promote_promote_rollback_rollback_is_on_the_registered_model(settings: Settings,
                                                                     monkeypatch: pytest.MonkeyPatch,
                                                                     capsys: pytest.CaptureFixture[str]):
    ml, name = model_registry.connect(settings), settings.model_name
    uri, run_id = _logged(settings)

    def register() -> str:
        return str(model_registry.register(ml, name, uri, run_id=run_id, tags={}, description="t").version)

    def gate(version: str, against: str) -> None:
        model_registry.record_gate(ml, name, version, {"gate.verdict": "pass", "gate.reason": f"better than v{against}",
                                                       "gate.champion_version": against})

    for key in ("DAG_ID", "DAG_RUN_ID", "TASK_ID"):
        monkeypatch.delenv(f"AIRFLOW_CTX_{key}", raising=False)
    v1 = register()
    model_registry.promote(ml, name, v1, first=True)
    v2 = register()
    gate(v2, v1)
    model_registry.promote(ml, name)
    v3 = register()
    gate(v3, v2)
    monkeypatch.setenv("AIRFLOW_CTX_DAG_ID", "canary_rollout")
    monkeypatch.setenv("AIRFLOW_CTX_DAG_RUN_ID", "scheduled__2026-12-01")
    monkeypatch.setenv("AIRFLOW_CTX_TASK_ID", "step")
    model_registry.promote(ml, name, reason="canary abc: promoted after 9 looks")
    monkeypatch.delenv("AIRFLOW_CTX_DAG_ID")
    back = model_registry.rollback(ml, name, reason="p99 latency SLO")
    assert (back.champion, back.previous) == (v2, v3)
    assert model_registry.alias_version(ml, name, "previous-champion") is None
    # no previous-champion now: the history says v1 (v3 was rolled back, v2 serves)
    again = model_registry.rollback(ml, name, reason="v2 also bad")
    assert (again.champion, again.previous) == (v1, v2)
    assert str(model_registry.alias_version(ml, name, "champion").version) == v1
    with pytest.raises(ModelVersionError, match="alias history"):
        model_registry.rollback(ml, name)  # v2 and v3 both ended in a rollback: nothing healthy left

    history = alias_history.read(ml, name)
    assert [m.seq for m in history] == list(range(1, len(history) + 1))
    assert [(m.action, m.alias, m.version, m.previous) for m in history] == [
        ("register", "challenger", v1, None), ("promote", "champion", v1, None), ("promote", "challenger", None, v1),
        ("register", "challenger", v2, None), ("promote", "previous-champion", v1, None),
        ("promote", "champion", v2, v1), ("promote", "challenger", None, v2),
        ("register", "challenger", v3, None), ("promote", "previous-champion", v2, v1),
        ("promote", "champion", v3, v2), ("promote", "challenger", None, v3),
        ("rollback", "champion", v2, v3), ("rollback", "previous-champion", None, v2),
        ("rollback", "champion", v1, v2)]
    assert history[1].reason == "first champion (no gate)"
    assert history[5].reason == f"gate pass vs v{v1}: better than v{v1}"
    assert history[9].reason.endswith("canary abc: promoted after 9 looks")
    assert history[9].actor == "airflow:canary_rollout/scheduled__2026-12-01/step"
    assert history[11].reason == "p99 latency SLO" and history[11].actor.startswith("user:")
    model = ml.get_registered_model(name)
    assert model.description.startswith("A model trained from tidemark") and alias_history.MARKER in model.description
    assert "| 14 |" in model.description and "v2 also bad" in model.description

    from pipelines.cli import main

    monkeypatch.setenv("TIDEMARK_HOME", str(settings.home))
    monkeypatch.setenv("MLFLOW_TRACKING_URI", settings.tracking_uri)
    assert main(["models", "history", "--model", name, "--json"]) == 0
    printed = json.loads(capsys.readouterr().out)
    assert printed["model"] == name and [m["seq"] for m in printed["moves"]] == list(range(14, 0, -1))
    assert printed["moves"][0] == {**history[-1].as_dict()}
    assert main(["models", "history", "--model", name]) == 0
    text = capsys.readouterr().out
    assert text.index("v2 also bad") < text.index("p99 latency SLO") < text.index("first champion")
