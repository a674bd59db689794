"""Concept drift caught by the drift job's label check where the prediction log does not reach back.

The world: the ``concept_drift`` scenario (from ``DRIFT`` on, fraud is small domestic card testing
instead of large foreign card-not-present payments; the inputs barely move), real Spark feature
tables, a real redis-server as the online store, and a champion trained on labels known at
``CUTOFF``: its data ends 30 days before, two days before the drift. The champion has served
nothing, as in a deployment younger than the label maturity, so every score the label check uses
is computed offline from the payments' point-in-time features.

A mature label window lags its interval by 30 to 60 days, so the world is 100 days long and the
champion's features warm up for 10 days instead of 30: the interval ``PRE_END`` judges payments
made before the drift (after the champion's training split: its validation days and the ones
after them), ``POST_END`` the 30 days after it.
"""

from __future__ import annotations

from collections.abc import Iterator
from datetime import UTC, date, datetime, timedelta
from typing import Any

import pytest

from pipelines import model_registry
from pipelines.drift_job import DriftOutcome, DriftPolicy, monitor
from tests.integration.redis_servers import RedisProc
from tidemark.settings import Settings, SparkSettings

pytestmark = pytest.mark.integration

START, DAYS, ROWS = date(2026, 1, 5), 100, 80_000
DRIFT = START + timedelta(days=40)
HOUR = timedelta(hours=1)


def _day(offset: int) -> datetime:
    """Midnight UTC, ``offset`` days after ``START``."""
    return datetime.combine(START + timedelta(days=offset), datetime.min.time(), UTC)


CUTOFF = _day(68)     # champion: payments up to day 38, labels known at day 68
PRE_END = _day(70)    # mature payments up to day 40: before the drift
POST_END = _day(100)  # mature payments from day 40 to day 70: after it
FEATURES_UNTIL = START + timedelta(days=70)


@pytest.fixture(scope="module")
def world(tmp_path_factory: pytest.TempPathFactory, spark: Any, module_redis: RedisProc) -> Iterator[Settings]:
    from examples.fraud.datagen import DatagenConfig, Scenario, generate
    from examples.fraud.feature_jobs import build_features
    from examples.fraud.train_job import train_and_register
    from examples.fraud.training import TrainConfig

    home = tmp_path_factory.mktemp("concept-drift-home")
    settings = Settings(home=home, spark=SparkSettings(master="local[2]", shuffle_partitions=4),
                        redis_url=module_redis.url)
    generate(settings.raw_dir, DatagenConfig(rows=ROWS, seed=3, start=START, days=DAYS,
                                             scenario=Scenario.CONCEPT_DRIFT, drift_start=DRIFT))
    build_features(spark, settings.raw_dir, settings.offline_dir, end=FEATURES_UNTIL)  # nothing later is scored
    config = TrainConfig(label_cutoff=CUTOFF, feature_warmup=timedelta(days=10), epochs=3, patience=2,
                         hidden=(32, 16), batch_size=256, seed=0)
    version = train_and_register(settings, config, progress=False).version.version
    model_registry.promote(model_registry.connect(settings), settings.model_name, version, first=True)
    yield settings


@pytest.fixture(scope="module")
def judged(world: Settings) -> dict[str, DriftOutcome]:
    return {"pre": monitor(world, PRE_END - HOUR, PRE_END), "post": monitor(world, POST_END - HOUR, POST_END)}


def test_before_the_drift_the_offline_label_check_finds_none(world: Settings, judged: dict[str, DriftOutcome]):
    out = judged["pre"]
    prauc = out.prauc
    assert prauc["source"] == "offline" and prauc["logged"] == 0, prauc
    assert prauc["judged"] == 1.0 and prauc["concept_drift"] == 0.0, out.reasons
    # no served rows: the inputs are not judged, and the labels alone decide (not "insufficient_data")
    assert out.decision == "no_drift" and out.rows == 0, out.reasons
    assert out.reasons[0].startswith("inputs not judged") and out.reasons[1].startswith("labels:"), out.reasons
    assert "scored offline" in out.reasons[1]
    assert prauc["positives"] >= DriftPolicy().min_positives and prauc["scored"] == prauc["labelled"], prauc
    tags = model_registry.connect(world).get_run(str(out.run_id)).data.tags
    assert tags["drift.label_source"] == "offline" and tags["drift.decision"] == "no_drift"


def test_after_the_drift_the_offline_label_check_finds_concept_drift(world: Settings, judged: dict[str, DriftOutcome]):
    out = judged["post"]
    prauc = out.prauc
    assert prauc["source"] == "offline" and prauc["judged"] == 1.0, out.reasons
    assert out.decision == "drift" and prauc["concept_drift"] == 1.0, out.reasons
    assert any(r.startswith("concept drift:") and "scored offline" in r for r in out.reasons), out.reasons
    validation, pr_auc = float(prauc["validation"]), float(prauc["pr_auc"])
    assert pr_auc < validation / 3 and float(prauc["upper"]) < validation - DriftPolicy().prauc_margin, prauc
    assert pr_auc < float(judged["pre"].prauc["pr_auc"]) / 3
    # more mature payments than the cap (offline_label_rows): every fraud scored, the rest weighted back
    assert prauc["scored"] == DriftPolicy().offline_label_rows < prauc["labelled"], prauc
    run = model_registry.connect(world).get_run(str(out.run_id)).data
    assert run.tags["drift.label_source"] == "offline" and run.tags["drift.decision"] == "drift"
    assert run.metrics["prauc.pr_auc"] == pytest.approx(pr_auc) and run.metrics["prauc.concept_drift"] == 1.0


def test_the_offline_sample_keeps_every_fraud_and_weighs_the_rest_back():
    """The cap (``offline_label_rows``): all frauds, legitimate payments picked by a hash of their id
    (an overlapping window keeps the same ones) and weighted so that the PR-AUC is that of them all."""
    import numpy as np
    import pandas as pd

    from monitoring.average_precision import average_precision
    from pipelines.drift_job import _capped, _prauc_bound

    rng = np.random.default_rng(0)
    y = (rng.random(40_000) < 0.01).astype(np.int8)
    payments = pd.DataFrame({"transaction_id": rng.permutation(10**6)[:40_000], "is_fraud": y,
                             "score": rng.normal(size=40_000) + 1.5 * y})
    kept = _capped(payments, 4_000, ["transaction_id"], "is_fraud")
    assert len(kept) == 4_000 and kept["is_fraud"].sum() == y.sum()
    assert kept.groupby("is_fraud")["weight"].sum().round().tolist() == [len(y) - y.sum(), y.sum()]
    # most of the same payments: mostly the same picks
    later = _capped(payments.iloc[5_000:], 3_500, ["transaction_id"], "is_fraud")
    assert len(set(later["transaction_id"]) & set(kept["transaction_id"])) > 0.8 * len(later)
    full = average_precision(payments["score"], y)
    ap, se, upper = _prauc_bound(kept["score"].to_numpy(), kept["is_fraud"].to_numpy(), kept["weight"].to_numpy(),
                                 DriftPolicy())
    assert abs(ap - full) < 2 * se and upper > ap
    under = _capped(payments, 100_000, ["transaction_id"], "is_fraud")
    assert under["weight"].eq(1.0).all()  # under the cap: every payment, weight 1


def test_without_feature_tables_the_label_check_says_so_and_the_job_goes_on(world: Settings):
    table = world.offline_dir / "merchant_stats"
    aside = table.with_name("merchant_stats.aside")
    table.rename(aside)
    try:
        out = monitor(world, PRE_END - HOUR, PRE_END)
    finally:
        aside.rename(table)
    assert out.decision == "insufficient_data" and out.prauc["judged"] == 0.0, out.reasons
    assert out.prauc["source"] == "offline" and "scoring offline failed" in out.reasons[-1], out.reasons


def test_the_world_is_what_the_test_says(world: Settings):
    """The champion was fitted and validated before the drift, on labels known at ``CUTOFF``."""
    ml = model_registry.connect(world)
    champion = model_registry.alias_version(ml, world.model_name, model_registry.CHAMPION)
    params = ml.get_run(str(champion.run_id)).data.params
    assert datetime.fromisoformat(params["data_end"]) < datetime.combine(DRIFT, datetime.min.time(), UTC)
    assert datetime.fromisoformat(params["label_cutoff"]) == CUTOFF


def test_the_drift_command_prints_the_dags_summary(world: Settings, monkeypatch: pytest.MonkeyPatch,
                                                   capsys: pytest.CaptureFixture[str]):
    """`tidemark drift --json`: the same judgement as the DAG's task, for a script."""
    import json

    from pipelines.cli import main

    for name, value in {"TIDEMARK_HOME": world.home, "TIDEMARK_REDIS_URL": world.redis_url,
                        "TIDEMARK_SPARK_MASTER": "local[2]"}.items():
        monkeypatch.setenv(name, str(value))
    start, end = (POST_END - HOUR).isoformat(), POST_END.isoformat()
    assert main(["drift", "--start", start, "--end", end, "--json"]) == 0
    summary = json.loads(capsys.readouterr().out)
    assert (summary["decision"], summary["model"], summary["interval_start"]) == ("drift", world.model_name, start)
    assert summary["prauc"]["concept_drift"] == 1.0 and summary["mlflow_run_id"]
    assert main(["drift", "--start", end, "--end", start]) == 2
    assert "must come after" in capsys.readouterr().err
