"""The registry flow (register, promote, gate verdicts, rollback) on real MLflow backend stores:
SQLite, and PostgreSQL when one is reachable (``TIDEMARK_TEST_POSTGRES_URL``, default the local
server on 127.0.0.1:5432). Each PostgreSQL run gets its own database, dropped afterwards."""

from __future__ import annotations

import os
import uuid
from collections.abc import Iterator
from pathlib import Path

import mlflow
import numpy as np
import pandas as pd
import pytest

from examples.fraud.model import FraudModel, ModelSpec, build_module
from examples.fraud.pyfunc import MODEL_CODE, unwrap
from pipelines import model_registry
from pipelines.errors import GateError, ModelVersionError, NoChampionError, RegistryError
from tidemark.settings import Settings, SparkSettings

pytestmark = pytest.mark.integration

POSTGRES = os.environ.get("TIDEMARK_TEST_POSTGRES_URL", "postgresql://postgres@127.0.0.1:5432/postgres")
FRAME = pd.DataFrame({"amount": [12.5, 80.0, None, 3.0] * 10, "channel": ["pos", "ecom", None, "pos"] * 10})


@pytest.fixture(scope="module")
def postgres_uri() -> Iterator[str]:
    """A fresh PostgreSQL database for MLflow, or a skip that says why there is none."""
    psycopg = pytest.importorskip("psycopg")
    try:
        admin = psycopg.connect(POSTGRES, connect_timeout=3, autocommit=True)
    except psycopg.OperationalError as exc:
        pytest.skip(f"PostgreSQL not reachable at {POSTGRES} ({str(exc).strip()}); set "
                    "TIDEMARK_TEST_POSTGRES_URL to a server where this user may create databases")
    name = f"tidemark_mlflow_{uuid.uuid4().hex[:10]}"
    with admin.cursor() as cur:
        cur.execute(f'CREATE DATABASE "{name}"')
    try:
        yield POSTGRES.rsplit("/", 1)[0] + "/" + name
    finally:
        with admin.cursor() as cur:  # FORCE: MLflow's connection pool still holds sessions
            cur.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
        admin.close()


@pytest.fixture(params=["sqlite", "postgresql"])
def settings(request: pytest.FixtureRequest, tmp_path: Path) -> Settings:
    uri = request.getfixturevalue("postgres_uri") if request.param == "postgresql" else None
    return Settings(home=tmp_path / "home", spark=SparkSettings(), mlflow_tracking_uri=uri,
                    model_name=f"fraud-detector-{uuid.uuid4().hex[:6]}")


def _register(settings: Settings, seed: int) -> str:
    """Log a small (untrained) fraud model in a run and register it; returns the version."""
    ml = model_registry.connect(settings)
    spec = ModelSpec.fit(FRAME, ["amount"], ["channel"], hidden=(4,), min_count=1)
    import torch

    torch.manual_seed(seed)
    model = FraudModel(spec, build_module(spec))
    with mlflow.start_run(experiment_id=model_registry.experiment_id(ml, settings, settings.model_name)) as run, \
            _tmp(settings) as folder:
        # requirements given: inferring them loads the model in a subprocess, ~20 s a version
        info = mlflow.pyfunc.log_model(name="model", python_model=str(MODEL_CODE), artifacts=model.save(folder),
                                       pip_requirements=["tidemark"])
        version = model_registry.register(ml, settings.model_name, info.model_uri, run_id=run.info.run_id,
                                          tags={"seed": str(seed)}, description=f"seed {seed}")
    return str(version.version)


class _tmp:
    def __init__(self, settings: Settings) -> None:
        self.path = settings.home / f"tmp-{uuid.uuid4().hex[:6]}"

    def __enter__(self) -> Path:
        return self.path

    def __exit__(self, *exc: object) -> None:
        import shutil

        shutil.rmtree(self.path, ignore_errors=True)


def _alias(settings: Settings, alias: str) -> str | None:
    found = model_registry.alias_version(model_registry.connect(settings), settings.model_name, alias)
    return None if found is None else str(found.version)


def _pass(settings: Settings, version: str, against: str) -> None:
    model_registry.record_gate(model_registry.connect(settings), settings.model_name, version,
                               {"gate.verdict": "pass", "gate.reason": "test", "gate.champion_version": against})


def test_registry_flow(settings: Settings):
    ml = model_registry.connect(settings)
    name = settings.model_name
    v1 = _register(settings, 1)
    assert _alias(settings, "challenger") == v1 and _alias(settings, "champion") is None
    with pytest.raises(NoChampionError, match="promote --first"):
        model_registry.promote(ml, name)
    assert model_registry.promote(ml, name, first=True).champion == v1
    assert _alias(settings, "challenger") is None  # the promoted challenger is champion now

    v2 = _register(settings, 2)
    assert _alias(settings, "challenger") == v2 and _alias(settings, "champion") == v1
    with pytest.raises(GateError, match="has not passed"):
        model_registry.promote(ml, name)
    model_registry.record_gate(ml, name, v2, {"gate.verdict": "fail", "gate.reason": "pr_auc lower",
                                              "gate.champion_version": v1})
    with pytest.raises(GateError, match="pr_auc lower"):
        model_registry.promote(ml, name)
    _pass(settings, v2, against=v1)
    assert set(ml.get_model_version(name, v2).tags) >= {"gate.verdict", "gate.champion_version"}
    assert "gate.reason" in ml.get_model_version(name, v2).tags
    done = model_registry.promote(ml, name)
    assert (done.champion, done.previous) == (v2, v1)
    assert (_alias(settings, "champion"), _alias(settings, "previous-champion")) == (v2, v1)

    v3 = _register(settings, 3)
    _pass(settings, v3, against=v1)  # a verdict against a champion that has since been replaced
    with pytest.raises(GateError, match="run `tidemark gate --version"):
        model_registry.promote(ml, name)

    back = model_registry.rollback(ml, name, reason="error rate SLO")
    assert (back.champion, back.previous) == (v1, v2)
    assert (_alias(settings, "champion"), _alias(settings, "previous-champion")) == (v1, None)
    with pytest.raises(ModelVersionError, match="no previous-champion"):
        model_registry.rollback(ml, name)
    with pytest.raises(GateError, match="revoked"):
        model_registry.promote(ml, name, v2)
    assert _alias(settings, "challenger") == v3
    done = model_registry.promote(ml, name)  # v3's verdict was against v1, champion again
    assert (done.champion, done.previous) == (v3, v1)
    with pytest.raises(RegistryError, match="already the champion"):
        model_registry.promote(ml, name, v3)
    with pytest.raises(ModelVersionError, match="no version 99"):
        model_registry.promote(ml, name, 99)

    # A process killed between registering and finishing leaves a "pending" version: never promoted.
    half = mlflow.register_model(ml.get_model_version(name, v3).source, name, tags={"tidemark.state": "pending"})
    with pytest.raises(ModelVersionError, match="did not finish registering"):
        model_registry.promote(ml, name, str(half.version))
    # An interrupted promotion can leave previous-champion == champion: rollback must not "restore" it.
    ml.set_registered_model_alias(name, "previous-champion", v3)
    with pytest.raises(RegistryError, match="both v"):
        model_registry.rollback(ml, name)
    assert _alias(settings, "champion") == v3

    champion = mlflow.pyfunc.load_model(f"models:/{name}@champion")
    scores = champion.predict(FRAME)["fraud_probability"].to_numpy()
    assert scores.shape == (len(FRAME),) and np.all((scores > 0) & (scores < 1))
    assert unwrap(champion).spec.columns == ["amount", "channel"]
    if settings.mlflow_tracking_uri is not None:  # artifacts of a database store stay under the home
        assert any(settings.mlflow_artifacts_dir.rglob("weights.pt"))
