"""What an ML engineer sees in ``tidemark mlflow-ui`` after a training run and a canary, read by
headless Chromium from the rendered React pages: the version's evaluation curves (run artifacts)
and the alias history (the registered model's description and the version's page).

The world is test_model_evaluation's (two scikit-learn versions through ``register_model``, which
logs the curves) plus test_canary_controller's evidence writer: v1 is promoted as the first
champion, v2 passes a gate and its canary ramps, on a real Redis, until it is promoted.
"""

from __future__ import annotations

import getpass
import re
from pathlib import Path

import pytest

from features.sdk import FeatureClient
from pipelines import canary, model_registry
from pipelines.model_registration import register_model
from tests.integration.headless_browser import (
    chromium_or_skip,
    cli_server,
    dump_dom,
    free_port,
    visible_text,
    wait_for_line,
)
from tests.integration.redis_servers import RedisProc
from tests.integration.test_canary_controller import POLICY, _traffic
from tests.integration.test_model_evaluation import FEATURES, PLOTS, _fit, _frame
from tidemark.settings import Settings, SparkSettings

pytestmark = pytest.mark.integration

NAME = "team-churn"


def _train_promote_and_canary(settings: Settings) -> tuple[str, str, str, str]:
    """v1 first champion, v2 gated and promoted by a canary: (v1, v2, v2's training run id, the
    canary's run id)."""
    fc = FeatureClient(settings)
    fc.apply()
    train, val = _frame(3_000, 1), _frame(1_000, 2)
    ml = model_registry.connect(settings)
    first = register_model(_fit(train, train["churned"]), NAME, features=FEATURES, frame=train, validation_frame=val,
                           label="churned", task="binary", feature_client=fc)
    model_registry.promote(ml, NAME, str(first.version), first=True)
    second = register_model(_fit(train, train["churned"]), NAME, features=FEATURES, frame=train,
                            validation_frame=val, label="churned", task="binary", feature_client=fc)
    v1, v2 = str(first.version), str(second.version)
    model_registry.record_gate(ml, NAME, v2, {"gate.verdict": "pass", "gate.reason": "PR-AUC within the margin",
                                              "gate.champion_version": v1})
    state = canary.start(settings, shadow=False)
    for look in range(30):
        _traffic(settings, state, seed=look)
        outcome = canary.step(settings, POLICY)
        state = outcome.state
        if outcome.action == "promoted":
            break
    assert outcome.action == "promoted", outcome
    return v1, v2, str(second.run_id), state.canary_id


def test_the_mlflow_ui_shows_the_versions_curves_and_alias_history(tmp_path: Path, module_redis: RedisProc):
    browser = chromium_or_skip()
    settings = Settings(home=tmp_path / "home", spark=SparkSettings(), redis_url=module_redis.url, model_name=NAME)
    v1, v2, run_id, canary_id = _train_promote_and_canary(settings)
    ml = model_registry.connect(settings)
    experiment = ml.get_run(run_id).info.experiment_id
    port = free_port()
    env = {"TIDEMARK_HOME": str(settings.home), "MLFLOW_TRACKING_URI": settings.tracking_uri}
    log = tmp_path / "mlflow-ui.log"
    with cli_server(["mlflow-ui", "--port", str(port)], env, log) as server:
        wait_for_line(server, log, r"MLflow UI ready on ")
        base = f"http://127.0.0.1:{port}/#"
        model_page = visible_text(dump_dom(browser, f"{base}/models/{NAME}", until="canary-promote"))
        version_page = visible_text(dump_dom(browser, f"{base}/models/{NAME}/versions/{v2}",
                                             until="canary.outcome"))
        run_page = f"{base}/experiments/{experiment}/runs/{run_id}/artifacts"
        artifacts = visible_text(dump_dom(browser, run_page, until="roc_curve_plot.png"))
        roc = dump_dom(browser, f"{run_page}/roc_curve_plot.png", until='src="blob:')

    # the registered model's page: its description's alias history table, newest move first, with
    # who moved each alias and why (the canary's promotion names its run)
    actor = f"user:{getpass.getuser()}"
    assert "Alias history" in model_page and "alias version was action actor reason" in model_page, model_page[:3000]
    assert f"champion {v2} {v1} canary-promote {actor} gate pass vs v{v1}: PR-AUC within the margin" in model_page
    assert f"canary run {canary_id[:20]}" in model_page
    assert f"champion {v1} - promote {actor} first champion (no gate)" in model_page
    assert model_page.index("canary-promote") < model_page.index("first champion (no gate)")
    # the version's page: its alias and the canary's outcome
    assert f"Version {v2}" in version_page and "Aliases : @ champion" in version_page, version_page[:3000]
    assert "canary.outcome promoted canary.reason" in version_page and f"canary.run_id {canary_id}" in version_page
    # the version's training run: MLflow's evaluation curves among its artifacts, and one drawn
    missing = [plot for plot in sorted(PLOTS) if plot not in artifacts]
    assert not missing, f"{missing} not on the run's artifacts page: {artifacts[:3000]}"
    assert re.search(r'<img alt="roc_curve_plot\.png" src="blob:', roc), visible_text(roc)[:3000]
