"""tidemark.yaml: a repo's models read whole, or refused naming the file, the line and the key."""

from __future__ import annotations

from dataclasses import replace
from pathlib import Path

import pytest

from pipelines.errors import ProjectError
from pipelines.project import load_project

GOOD = """\
models:
  - name: driver-completion
    features: driver_activity
    task: binary
    label_source:
      table: ${DATA}/trips
      label: completed
      join_keys: [trip_id]
    request_columns: [trip_distance_km]
    train: examples.driver.training:fit_completion
    window_days: 14
    drift: {psi: 0.25}
    canary: {min_dwell_s: 900, psi_threshold: null}
  - name: driver-duration
    features: [driver_hourly_stats:conv_rate, customer_daily_profile:current_balance]
    task: regression
    label_source: {table: data/trips, label: trip_minutes}
    train: examples.driver.training:fit_duration
"""


def _repo(tmp_path: Path, text: str) -> Path:
    (tmp_path / "feature_store.yaml").write_text("project: p\n")
    (tmp_path / "tidemark.yaml").write_text(text)
    return tmp_path


def test_a_project_reads_whole(tmp_path: Path) -> None:
    project = load_project(_repo(tmp_path, GOOD), env={"DATA": "/srv/driver"})
    first, second = project.models
    assert first.name == "driver-completion" and first.features == "driver_activity" and first.task == "binary"
    assert first.label_source.table == "/srv/driver/trips" and first.label_source.join_keys == ("trip_id",)
    assert first.request_columns == ("trip_distance_km",) and first.window_days == 14.0
    assert first.drift.psi == 0.25 and first.drift.alpha == 0.05  # the rest: today's defaults
    assert second.features == ("driver_hourly_stats:conv_rate", "customer_daily_profile:current_balance")
    assert second.label_source.table == str(tmp_path.resolve() / "data/trips")  # relative to the project
    assert project.model("driver-duration") is second
    assert first.canary == {"min_dwell_s": 900, "psi_threshold": None} and second.canary == {}


def test_a_canary_is_judged_by_the_declared_policy_over_the_deployments(tmp_path: Path) -> None:
    from pipelines.canary import default_policy
    from tidemark.settings import Settings, SparkSettings

    repo = _repo(tmp_path, GOOD.replace("${DATA}", "/srv"))
    deployment = Settings(home=tmp_path, spark=SparkSettings(), feast_repo=repo, canary_min_samples=50)
    policy = default_policy(replace(deployment, model_name="driver-completion"))
    assert policy.min_dwell_s == 900 and policy.min_samples == 50  # declared, then the deployment's
    assert default_policy(replace(deployment, model_name="driver-duration")).min_dwell_s == deployment.canary_min_dwell_s


@pytest.mark.parametrize(("edit", "message"), [
    (("    task: binary", "    taks: binary"), r"line 4: models\[0\]\.taks: unknown key; did you mean 'task'\?"),
    (("    task: binary", "    task: ranking"), r"line 4: models\[0\]\.task: 'ranking' is not one of"),
    (("driver-duration", "driver-completion"), r"line 14: models\[1\]\.name: two models are named 'driver-completion'"),
    (("    window_days: 14", "    window_days: -1"), r"line 11: models\[0\]\.window_days: must be a number above 0"),
    (("drift: {psi: 0.25}", "drift: {psy: 0.25}"), r"line 12: models\[0\]\.drift\.psy: unknown key; did you mean 'psi'"),
    (("min_dwell_s: 900", "min_dwel_s: 900"),
     r"line 13: models\[0\]\.canary\.min_dwel_s: unknown key; did you mean 'min_dwell_s'"),
    (("min_dwell_s: 900", "alpha: 2"), r"line 13: models\[0\]\.canary: alpha must be in \(0, 1\)"),
    (("      label: completed\n", ""), r"line 5: models\[0\]\.label_source: label_source\.label is required"),
    (("fit_completion", "fit_completion_v2\n    oops: 1"), r"line 11: models\[0\]\.oops: unknown key"),
    (("    train: examples.driver.training:fit_duration", "    train: fit_duration"),
     r"line 18: models\[1\]\.train: 'fit_duration' must be 'package.module:function'"),
])
def test_a_mistake_names_the_line_and_the_key(tmp_path: Path, edit: tuple[str, str], message: str) -> None:
    with pytest.raises(ProjectError, match=message):
        load_project(_repo(tmp_path, GOOD.replace(*edit, 1)), env={"DATA": "/srv"})


def test_what_else_is_refused(tmp_path: Path) -> None:
    with pytest.raises(ProjectError, match=r"line 6: .*\$\{DATA\}, which is not set"):
        load_project(_repo(tmp_path, GOOD), env={})
    with pytest.raises(ProjectError, match="not valid YAML"):
        load_project(_repo(tmp_path, "models: [\n"), env={})
    with pytest.raises(ProjectError, match="not a Feast repo"):
        load_project(tmp_path / "nowhere")
    project = load_project(_repo(tmp_path, GOOD), env={"DATA": "/d"})
    with pytest.raises(ProjectError, match="declares 2 models.*--model NAME"):
        project.model(None)
    with pytest.raises(ProjectError, match="did you mean 'driver-duration'"):
        project.model("driver-durations")
    assert callable(project.models[0].entry_point())  # the driver example's, importable
    moved = load_project(_repo(tmp_path, GOOD.replace("training:fit_completion", "nowhere:fit")), env={"DATA": "/d"})
    with pytest.raises(ProjectError, match="'examples.driver.nowhere:fit' can't be imported"):
        moved.models[0].entry_point()


HOOKS = """\
feature_jobs:
  build: my_team.jobs:build
  sample_entities: my_team.jobs:sample
demo: my_team.demo:main
"""


def test_a_model_may_bring_its_own_training_job(tmp_path: Path) -> None:
    text = GOOD.replace("    train: examples.driver.training:fit_duration", "    train_job: my_team.jobs:train")
    second = load_project(_repo(tmp_path, text), env={"DATA": "/d"}).models[1]
    assert second.train == "" and second.train_job == "my_team.jobs:train"
    with pytest.raises(ProjectError, match=r"models\[1\]: train is required \(or train_job"):
        load_project(_repo(tmp_path, GOOD.replace("    train: examples.driver.training:fit_duration\n", "")),
                     env={"DATA": "/d"})
    with pytest.raises(ProjectError, match=r"line 18: models\[1\]\.train_job: 'train' must be"):
        load_project(_repo(tmp_path, text.replace("my_team.jobs:train", "train")), env={"DATA": "/d"})
    with pytest.raises(ProjectError, match="train_job: entry point 'my_team.jobs:train' can't be imported"):
        load_project(_repo(tmp_path, text), env={"DATA": "/d"}).models[1].job()


def test_project_hooks_are_entry_points(tmp_path: Path) -> None:
    project = load_project(_repo(tmp_path, HOOKS + GOOD), env={"DATA": "/d"})
    assert project.feature_jobs == {"build": "my_team.jobs:build", "sample_entities": "my_team.jobs:sample"}
    assert project.demo == "my_team.demo:main"
    assert load_project(_repo(tmp_path, GOOD), env={"DATA": "/d"}).hook("build") is None
    with pytest.raises(ProjectError, match=r"line 2: feature_jobs\.biuld: unknown key; did you mean 'build'"):
        load_project(_repo(tmp_path, HOOKS.replace("build:", "biuld:") + GOOD), env={"DATA": "/d"})
    with pytest.raises(ProjectError, match=r"line 4: demo: 'main' must be 'package.module:function'"):
        load_project(_repo(tmp_path, HOOKS.replace("my_team.demo:main", "main") + GOOD), env={"DATA": "/d"})
    with pytest.raises(ProjectError, match=r"line 1: modles: unknown key; did you mean 'models'"):
        load_project(_repo(tmp_path, GOOD.replace("models:", "modles:")), env={"DATA": "/d"})


def test_the_bundled_example_is_the_default_project(tmp_path: Path) -> None:
    from pipelines.project import project_model, settings_project
    from tidemark.settings import BUNDLED_PROJECT, Settings, SparkSettings

    settings = Settings(home=tmp_path / "home", spark=SparkSettings())
    assert settings.project_repo == BUNDLED_PROJECT and BUNDLED_PROJECT.parts[-3:] == ("examples", "fraud", "feature_repo")
    project = settings_project(settings)
    (model,) = project.models
    assert model.name == "fraud-detector" and model.train_job == "examples.fraud.train_job:train_job"
    assert model.label_source.table == str(tmp_path / "home" / "raw" / "labels")
    assert callable(model.job())
    assert project_model(settings, "fraud-renamed").name == "fraud-renamed"  # TIDEMARK_MODEL_NAME, as before


def test_a_model_may_push_its_scored_events(tmp_path: Path) -> None:
    pushing = GOOD.replace("    window_days: 14\n", "    window_days: 14\n    push_scored_events: trips_push\n", 1)
    first, second = load_project(_repo(tmp_path, pushing), env={"DATA": "/d"}).models
    assert first.push_scored_events == "trips_push" and second.push_scored_events is None
    for bad in ("[trips_push]", '""'):
        with pytest.raises(ProjectError, match=r"line 12: models\[0\]\.push_scored_events: must be non-empty text"):
            load_project(_repo(tmp_path, pushing.replace("trips_push", bad)), env={"DATA": "/d"})
    with pytest.raises(ProjectError, match="did you mean 'push_scored_events'"):
        load_project(_repo(tmp_path, pushing.replace("push_scored_events", "push_scored_event")), env={"DATA": "/d"})


def test_a_retrain_is_of_a_model_the_project_has(tmp_path: Path) -> None:
    """The run's ``model``, else the drift event's, else the only one; any other name is a
    ProjectError, which the DAGs' retry policy fails at once instead of retrying for minutes."""
    from pipelines.retrain_job import settings_for_model
    from tidemark.settings import Settings, SparkSettings

    deployment = Settings(home=tmp_path, spark=SparkSettings(), feast_repo=_repo(tmp_path, GOOD.replace("${DATA}", "/srv")))
    assert settings_for_model(deployment, "driver-duration", {"model": "driver-completion"}).model_name == "driver-duration"
    assert settings_for_model(deployment, None, {"model": "driver-completion"}).model_name == "driver-completion"
    with pytest.raises(ProjectError, match="name one in the run's conf"):
        settings_for_model(deployment, None, None)  # two models: which?
    with pytest.raises(ProjectError, match=r"'driver-speed', which the project does not have.*driver-completion"):
        settings_for_model(deployment, "driver-speed", None)
    bundled = Settings(home=tmp_path / "home", spark=SparkSettings())
    assert settings_for_model(bundled, None, None).model_name == "fraud-detector"
