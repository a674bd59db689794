"""``tidemark demo``: the whole loop, on one machine, in minutes.

    1 generate       payments, labels and profiles up to tomorrow (the hours after now are traffic)
    2 features       history on Spark, then the scheduler's ``feature_pipeline`` run for the last day
    3 champion       trained on mature labels, registered in MLflow, promoted
    4 serve          ``tidemark serve``'s app on a local port, online store materialized to now
    5 baseline       the next hours' payments through the server; ``drift_monitor``: no drift
    6 the world moved  the ``covariate_shift`` scenario from a week ago on (amounts x1.6, incomes
                   up), the week rebuilt and loaded as its daily runs would have; the shifted
                   payments through the server; ``drift_monitor``: drift, the retrain Asset emitted
    7 retrain        the ``retrain`` run the scheduler starts on that Asset: a challenger, gated,
                   a shadow canary
    8 canary         traffic while the scheduler runs ``canary_rollout``'s looks, until promoted or
                   rolled back
    9 the story      versions, drift per column, canary steps, and where to look

The DAGs run as a deployment's do: ``airflow standalone`` (scheduler, LocalExecutor, DAG processor,
API server) on the metadata DB of ``tidemark airflow standalone`` (``$TIDEMARK_HOME/airflow``),
started at the beginning and stopped at the end. The DAGs start paused; each is unpaused when its
step needs the scheduler and paused again after it, so that the home's Airflow starts nothing by
itself later. ``feature_pipeline``'s run is the scheduler's latest daily one; ``drift_monitor`` is
triggered by hand, as ``airflow dags trigger`` does (it judges the hour up to the trigger); the
scheduler starts ``retrain`` on the drift run's Asset event and ``canary_rollout`` on retrain's,
and each look queues the next ``canary_look_every_s`` later, while the demo serves traffic.

Each run starts from a clean demo home; a ``$TIDEMARK_HOME`` that holds anything else is refused.
"""

from __future__ import annotations

import contextlib
import json
import shutil
import socket
import threading
import time
import warnings
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from datetime import UTC, date, datetime, timedelta
from typing import TYPE_CHECKING, Any

import pandas as pd

from features.redaction import redact_url
from tidemark.errors import TidemarkError
from tidemark.settings import Settings

if TYPE_CHECKING:
    from pipelines.dag_runs import Ran
    from pipelines.local_airflow import LocalAirflow
    from serving.server import Server

__all__ = ["DemoConfig", "DemoError", "run_demo"]

_MARKER = "demo.json"  # in $TIDEMARK_HOME: this home is the demo's, and may be reset by the next run
DAG_IDS = ("feature_pipeline", "drift_monitor", "retrain", "canary_rollout")
_STATE = ("raw", "offline", "feast", "mlflow.db", "mlartifacts", "redis", "airflow", "reports", "prediction_log")


class DemoError(TidemarkError):
    """The demo can't run here; the message says why and what to do."""


@dataclass(frozen=True)
class DemoConfig:
    """The demo's sizes. ``rows`` payments over ``days`` days; at most ``live_rows`` payments of
    traffic per phase (the next hours' payments, at least 500: keep ``rows / days`` above 1,000);
    the canary advances on ``canary_min_samples`` model calls per variant and step, and holds while
    the challenger's p99 call time exceeds ``canary_max_p99_ratio`` times the champion's (1.6, not
    the production 1.2: on two cores the shadow runs beside the request thread and two models of one
    architecture measured a p99 ratio of 1.35 with no slowdown by Mann-Whitney). A canary step
    dwells at least ``canary_min_dwell_s`` and is looked at every ``canary_look_every_s`` (production:
    5 minutes each), at most ``max_looks`` times."""

    rows: int = 200_000
    seed: int = 7
    days: int = 100
    live_rows: int = 1_000
    epochs: int = 20  # with early stopping; the fit takes seconds beside the frame
    max_rows: int = 60_000
    canary_min_samples: int = 200
    canary_max_p99_ratio: float = 1.6
    canary_min_dwell_s: int = 20
    canary_look_every_s: int = 20
    max_looks: int = 24


@dataclass
class _Story:
    """What happened, for the closing summary."""

    versions: dict[str, str] = field(default_factory=dict)
    drift: list[dict[str, Any]] = field(default_factory=list)
    retrain: dict[str, Any] = field(default_factory=dict)
    looks: list[dict[str, Any]] = field(default_factory=list)
    outcome: str = "not reached"


def run_demo(settings: Settings, config: DemoConfig | None = None) -> dict[str, Any]:
    """Run the loop end to end on ``settings.home``; returns the story it printed."""
    import os

    from pipelines.dag_runs import use_airflow_home
    from pipelines.local_airflow import LocalAirflow

    config = config or DemoConfig()
    # the libraries' deprecation and experimental-API warnings are not part of the story
    warnings.simplefilter("ignore")
    started = time.perf_counter()
    now = datetime.now(UTC).replace(microsecond=0)
    _reset_home(settings)
    settings = Settings(**{**settings.__dict__, "canary_min_samples": config.canary_min_samples,
                           "canary_max_p99_ratio": config.canary_max_p99_ratio,
                           "canary_min_dwell_s": config.canary_min_dwell_s,
                           "canary_look_every_s": config.canary_look_every_s})
    story = _Story()
    step = _Progress(started)
    step(f"tidemark demo in {settings.home} (MLflow {redact_url(settings.tracking_uri)})")
    # the DAGs' tasks read the canary's patience from the environment, as a deployment's do
    tasks_env = {"TIDEMARK_CANARY_MIN_SAMPLES": str(config.canary_min_samples),
                 "TIDEMARK_CANARY_MAX_P99_RATIO": str(config.canary_max_p99_ratio),
                 "TIDEMARK_CANARY_MIN_DWELL_S": str(config.canary_min_dwell_s),
                 "TIDEMARK_CANARY_LOOK_EVERY_S": str(config.canary_look_every_s)}
    # the story is printed here; this process's Airflow and MLflow keep to warnings (each run's
    # task logs are in the Airflow UI), and MLflow draws no progress bar per model download
    os.environ.setdefault("AIRFLOW__LOGGING__LOGGING_LEVEL", "WARNING")
    os.environ.setdefault("MLFLOW_ENABLE_ARTIFACTS_PROGRESS_BAR", "false")
    use_airflow_home(settings)  # before anything imports airflow
    with LocalAirflow(settings, _free_port(), tasks_env) as airflow:
        print(f"  Airflow starting in the background: {airflow.url} (its log: {airflow.log})")
        try:
            _story(settings, config, airflow, story, step, now)
        finally:
            airflow.pause_all()
    step("9/9 what happened")
    summary = _tell(settings, story)
    step(f"done in {time.perf_counter() - started:.0f} s")
    return summary


def _story(settings: Settings, config: DemoConfig, airflow: LocalAirflow, story: _Story, step: _Progress,
           now: datetime) -> None:
    step("1/9 generating payments, labels and customer profiles …")
    first_day = now.date() - timedelta(days=config.days - 2)  # up to tomorrow: the hours after now are traffic
    print(_generate(settings, config, first_day, "baseline").table())

    step("2/9 feature tables: history on Spark, then the scheduler's feature_pipeline run for the last day …")
    # the daily DAG's latest tick (01:00 UTC) at or before now: the interval its scheduled run covers
    daily = datetime.combine((now - timedelta(hours=1)).date(), datetime.min.time(), UTC) + timedelta(hours=1)
    _history(settings, first_day, daily.date() - timedelta(days=5))
    airflow.wait_ready(list(DAG_IDS))
    ran = _scheduled(airflow, "feature_pipeline")
    check = ran.values["check_online"]
    print(f"  {ran.run_id}: built {ran.values['build_features']['start']} … {ran.values['build_features']['end']}, "
          f"loaded {sum(ran.values['materialize'].values()):,} rows into Redis; online = offline for "
          f"{check['entities'] - check['pending']} entities ({check['mismatches']} mismatches)")

    # hourly from now until the drift steps are done: its scheduled run for the last hour finds no
    # champion yet (a new deployment's first hour) and skips; the demo's own runs come after it
    airflow.set_paused("drift_monitor", False)

    step("3/9 the first champion: trained on mature labels, registered in MLflow, promoted …")
    story.versions["champion"] = _first_champion(settings, config, now)

    step("4/9 serving it (the app of `tidemark serve`, on a local port) …")
    _load_today(settings, now)
    push = None  # the server pushes what it scores (push_scored_events)
    with _serving(settings) as (server, http):
        loaded = server.slots.get("champion")
        print(f"  {http.base_url} serving v{loaded.version if loaded else '? (not loaded: see the log above)'}")
        step("5/9 baseline traffic: the last hours' payments replayed at their times, then drift_monitor …")
        traffic = _recorded(settings, now, config.live_rows)
        _post(server, http, traffic, push=push)
        story.drift.append(_drift(airflow, "baseline"))

        step("6/9 the world moved a week ago (covariate_shift): the week rebuilt, loaded, its traffic served …")
        shift = now.date() - timedelta(days=7)
        _generate(settings, config, first_day, "covariate_shift", drift_start=shift)
        _rebuild_and_reload(settings, shift)
        shifted = _traffic(settings, now, config.live_rows)
        for _ in range(3):  # the hour's traffic is now mostly shifted
            _post(server, http, shifted, push=push)
        asked = datetime.now(UTC)
        for dag_id in ("retrain", "canary_rollout"):  # the scheduler starts them on their Assets
            airflow.set_paused(dag_id, False)
        drifted = _drift(airflow, "shifted")
        airflow.set_paused("drift_monitor", True)
        story.drift.append(drifted)
        if drifted["decision"] != "drift":
            raise DemoError(f"the shifted traffic was not judged drift: {drifted['reasons']}")

        step("7/9 the retrain DAG, started by the scheduler on the drift run's Asset: a challenger, gated, a canary …")
        story.retrain = _retrain(airflow, asked)
        story.versions["challenger"] = story.retrain["version"]
        if story.retrain["gate_passed"]:
            step("8/9 the canary: traffic served while canary_rollout looks, until promoted or rolled back …")
            story.outcome = _canary(settings, airflow, server, http, shifted, config, story, asked, push)
        else:
            story.outcome = f"v{story.retrain['version']} failed the gate; v{story.versions['champion']} stays champion"


# --- the steps ----------------------------------------------------------------------------------


class _Progress:
    def __init__(self, started: float) -> None:
        self.started = started

    def __call__(self, line: str) -> None:
        print(f"[{time.perf_counter() - self.started:5.0f} s] {line}", flush=True)


def _reset_home(settings: Settings) -> None:
    """Clear the previous demo's state; refuse a home that holds anything that is not the demo's."""
    home = settings.home
    marker = home / _MARKER
    if home.exists() and any(home.iterdir()) and not marker.exists():
        raise DemoError(f"{home} holds state that is not the demo's; run the demo on a home of its own: "
                        f"TIDEMARK_HOME=./.tidemark-demo tidemark demo")
    if marker.exists():
        from features.embedded_redis import EmbeddedRedis

        EmbeddedRedis(settings.redis_dir).stop()
        for name in _STATE:
            path = home / name
            if path.is_dir():
                shutil.rmtree(path)
            elif path.exists():
                path.unlink()
    home.mkdir(parents=True, exist_ok=True)
    marker.write_text(json.dumps({"started": datetime.now(UTC).isoformat()}), encoding="utf-8")


def _generate(settings: Settings, config: DemoConfig, first_day: date, scenario: str,
              drift_start: date | None = None) -> Any:
    from examples.fraud.datagen import DatagenConfig, Scenario, generate

    return generate(settings.raw_dir, DatagenConfig(rows=config.rows, seed=config.seed, start=first_day,
                                                    days=config.days, scenario=Scenario(scenario),
                                                    drift_start=drift_start))


def _history(settings: Settings, first_day: date, end: date) -> None:
    """The partitions that earlier daily runs would have built."""
    from pipelines.project import settings_project

    build = settings_project(settings).hook("build")
    assert build is not None  # the bundled example declares its feature jobs
    build(settings, first_day, end, checks=False)


def _load_today(settings: Settings, now: datetime) -> None:
    """Today's partitions (and the day before, for late rows) built and loaded up to ``now``, as an
    intraday run of the feature pipeline would."""
    from pipelines.feature_pipeline import build_interval, materialize

    build_interval(settings, now - timedelta(days=1), now)
    materialize(settings, now)


def _rebuild_and_reload(settings: Settings, shift: date) -> None:
    """The moved week's partitions rebuilt, and the online store reloaded from the offline tables
    (a rebuilt row keeps its times, so newest-wins writes would not replace the loaded one)."""
    from pipelines.feature_pipeline import build_interval, reload_online

    now = datetime.now(UTC)
    build_interval(settings, datetime.combine(shift, datetime.min.time(), UTC), now)
    results = reload_online(settings, now)
    print(f"  online store reloaded: {sum(r.counts.written for r in results):,} values")


def _first_champion(settings: Settings, config: DemoConfig, now: datetime) -> str:
    from pipelines import model_registry
    from pipelines.project import project_model
    from pipelines.project_training import TrainRequest, train_model

    outcome = train_model(settings, project_model(settings, settings.model_name),
                          TrainRequest(cutoff=now, seed=config.seed, epochs=config.epochs, max_rows=config.max_rows,
                                       progress=False))
    print("  " + outcome.summary().replace("\n", "\n  "))
    version = str(outcome.version.version)
    model_registry.promote(model_registry.connect(settings), settings.model_name, version, first=True)
    print(f"  v{version} promoted: the first champion")
    return version


@contextlib.contextmanager
def _serving(settings: Settings) -> Iterator[tuple[Server, Any]]:
    """The scoring server on a free local port (uvicorn in a thread), and an HTTP client to it."""
    import httpx
    import uvicorn

    from pipelines.cli_serving import push_scored
    from serving.server import build_server

    # as `tidemark serve --replay` on a CPU node: the model pushes each payment it scores into the
    # customer windows (push_scored_events), and recorded payments are read as of their own times
    server = build_server(settings, refresh_s=1.0, torch_threads=1, replay=True,
                          push_scored=push_scored(settings, [settings.model_name]))
    server.start_refresh()
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    web = uvicorn.Server(uvicorn.Config(server.app, host="127.0.0.1", port=port, log_level="warning",
                                        access_log=False))
    thread = threading.Thread(target=web.run, name="demo-server", daemon=True)
    thread.start()
    deadline = time.monotonic() + 30
    while not web.started:
        if not thread.is_alive() or time.monotonic() > deadline:
            raise DemoError(f"the scoring server did not start on port {port}")
        time.sleep(0.05)
    try:
        with httpx.Client(base_url=f"http://127.0.0.1:{port}", timeout=30.0) as http:
            yield server, http
    finally:
        web.should_exit = True
        thread.join(timeout=10)
        server.close()


def _traffic(settings: Settings, now: datetime, rows: int) -> pd.DataFrame:
    from examples.fraud.replay import upcoming_payments

    return upcoming_payments(settings.raw_dir, now, at_least=min(rows, 500)).head(rows)


def _recorded(settings: Settings, now: datetime, rows: int) -> pd.DataFrame:
    """The last hours' payments at their own times: replayed, they see the windows production
    served (the server reads them as of those times), not hours squeezed into a minute."""
    from examples.fraud.replay import recorded_payments

    return recorded_payments(settings.raw_dir, now, at_least=min(rows, 500)).tail(rows)


def _post(server: Server, http: Any, payments: pd.DataFrame, batch: int = 1,
          push: Callable[[pd.DataFrame], object] | None = None, quiet: bool = False) -> None:
    """Payments through the server, one per request as payments are scored, each pushed into the
    customer windows once scored (``push``), so the next one's windows hold it; its prediction log
    and canary counts written out after."""
    from examples.fraud.replay import post_payments

    started = time.perf_counter()
    n = post_payments(http, payments, batch=batch, push=push)
    if server.scorer.log_sink is not None:
        server.scorer.log_sink.flush()
    if server.scorer.evidence is not None:
        server.scorer.evidence.flush()
    if not quiet:
        print(f"  {n:,} payments scored over HTTP in {time.perf_counter() - started:.1f} s")


def _free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return int(probe.getsockname()[1])


def _finished(airflow: LocalAirflow, dag_id: str, run_id: str) -> Ran:
    ran = airflow.wait(dag_id, run_id)
    if ran.state != "success":
        raise DemoError(f"the {dag_id} run {run_id} ended {ran.state}: {ran.states}; its task logs are in the "
                        f"Airflow UI and under {airflow.home / 'logs'}")
    return ran


def _scheduled(airflow: LocalAirflow, dag_id: str) -> Ran:
    """Unpause ``dag_id``: the scheduler creates its latest interval's run (catchup is off); that
    run, finished, with the DAG paused again."""
    since = datetime.now(UTC)
    airflow.set_paused(dag_id, False)
    try:
        return _finished(airflow, dag_id, airflow.next_run(dag_id, since, "scheduled"))
    finally:
        airflow.set_paused(dag_id, True)


def _drift(airflow: LocalAirflow, label: str) -> dict[str, Any]:
    """A ``drift_monitor`` run by hand (the hour up to now), as ``airflow dags trigger`` makes it."""
    run_id = airflow.trigger("drift_monitor", note=f"tidemark demo: {label} traffic")
    ran = _finished(airflow, "drift_monitor", run_id)
    summary = dict(ran.values["compare[0]"])  # the example's one model: the first mapped check
    emitted = ran.states.get("request_retrain[0]") == "success"
    print(f"  {run_id}, {label}: {summary['decision']} on {summary['rows']:,} rows, "
          f"{len(summary['drifted_columns'])} columns drifted ({', '.join(summary['drifted_columns']) or 'none'})"
          f"{'; retrain requested (Asset tidemark://retrain-request)' if emitted else ''}")
    summary["label"], summary["emitted"] = label, emitted
    return summary


def _retrain(airflow: LocalAirflow, since: datetime) -> dict[str, Any]:
    """The ``retrain`` run the scheduler created on the drift run's Asset event: labels known at the
    drift interval's end, the DAG's default window and sizes."""
    run_id = airflow.next_run("retrain", since, "asset_triggered")
    print(f"  {run_id} (started by the Asset event) …")
    ran = _finished(airflow, "retrain", run_id)
    outcome = dict(ran.values["train_and_gate"])
    print(f"  v{outcome['version']} registered as challenger; gate {'pass' if outcome['gate_passed'] else 'fail'}: "
          f"{outcome['gate_reason']}")
    if ran.states.get("start_canary") == "success":
        print(f"  shadow canary started (MLflow run {ran.values['start_canary']['canary_id']})")
    return outcome


def _canary(settings: Settings, airflow: LocalAirflow, server: Server, http: Any, traffic: pd.DataFrame,
            config: DemoConfig, story: _Story, since: datetime,
            push: Callable[[pd.DataFrame], object] | None = None) -> str:
    """Serve traffic while the scheduler runs ``canary_rollout``'s looks (the first on retrain's
    Asset event, each queueing the next), until one promotes or rolls back."""
    from pipelines import canary

    seen: set[str] = set()
    rounds = 0
    deadline = time.monotonic() + config.max_looks * (config.canary_look_every_s + 60)
    while time.monotonic() < deadline and len(seen) < config.max_looks:
        state = canary.status(settings)
        if state.mode != "off":
            _wait_for_challenger(server, state.challenger_version)
            # one payment per request, as payment scoring is: the controller compares per-call
            # times, and with several rows per request each variant's calls would carry its share
            _post(server, http, traffic.sample(n=min(len(traffic), 300), random_state=rounds), batch=1, push=push,
                  quiet=True)
            rounds += 1
        else:
            time.sleep(1.0)
        for run_id, run_state, _ in airflow.runs("canary_rollout", since):
            if run_id in seen or run_state not in ("success", "failed"):
                continue
            seen.add(run_id)
            ran = airflow.read("canary_rollout", run_id)
            if ran.state != "success" or ran.values.get("step") is None:
                print(f"  {run_id}: {ran.state} {ran.states}")
                continue
            look = dict(ran.values["step"])
            look["run_id"] = run_id
            story.looks.append(look)
            print(f"  {run_id}: {look['action']:<8} → {look['mode']} {look['weight_pct']:g} %"
                  f"  ({'; '.join(look['reasons'])[:150]})")
            if look["action"] in ("promoted", "rollback"):
                return "promoted" if look["action"] == "promoted" else "rolled back"
    return f"still running after the demo's {len(seen)} looks"


def _wait_for_challenger(server: Server, version: str | None, timeout_s: float = 60.0) -> None:
    deadline = time.monotonic() + timeout_s
    while True:
        slot = server.slots.get("challenger")
        if slot is not None and slot.version == version:
            return
        if time.monotonic() > deadline:
            raise DemoError(f"the server did not load challenger v{version} within {timeout_s:.0f} s")
        time.sleep(0.2)


def _tell(settings: Settings, story: _Story) -> dict[str, Any]:
    from pipelines import model_registry

    ml = model_registry.connect(settings)
    champion = model_registry.alias_version(ml, settings.model_name, model_registry.CHAMPION)
    print(f"  models: v{story.versions['champion']} was champion; v{story.versions.get('challenger', '-')} "
          f"challenger; now champion: v{champion.version if champion else '-'} ({story.outcome})")
    for drift in story.drift:
        print(f"  drift, {drift['label']} traffic: {drift['decision']} ({drift['rows']:,} rows)")
        for column, psi in sorted(drift["psi"].items(), key=lambda kv: -kv[1])[:8]:
            mark = "drifted" if column in drift["drifted_columns"] else ""
            print(f"    {column:<22} PSI {psi:6.3f}  {mark}")
    if story.looks:
        print("  canary looks: " + " → ".join(f"{look['action']}({look['mode']} {look['weight_pct']:g}%)"
                                               for look in story.looks))
    last = next((d for d in reversed(story.drift) if d.get("report_dir")), None)
    print("  look at it:")
    print(f"    tidemark mlflow-ui                 runs, models and aliases, canary decisions ({redact_url(settings.tracking_uri)})")
    if last:
        print(f"    drift report                       {last['report_dir']}/report.html")
    print("    tidemark airflow standalone        the four DAGs and the runs above, with their task logs (user admin, "
          f"password in {settings.home / 'airflow' / 'simple_auth_manager_passwords.json.generated'})")
    return {"versions": story.versions, "champion": champion.version if champion else None, "drift": story.drift,
            "retrain": story.retrain, "looks": story.looks, "outcome": story.outcome}
