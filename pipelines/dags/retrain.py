"""``retrain``: on a drift Asset event (or by hand, with a conf), a gated challenger and its canary.

    check_no_canary ──► train_and_gate ──► start_canary
                        (sliding window up to       (shadow first; only when the gate
                         the drift interval's end)   passed, else skipped; emits
                                                     tidemark://canary-started, which
                                                     starts canary_rollout)

Conf (all optional): ``{"model": "fraud-detector", "window_days": 60, "max_rows": 200000, "epochs": 20,
"seed": 0, "label_cutoff": "2026-11-20T00:00:00+00:00"}``. The model defaults to the one the drift
event names (each of a project's models has its own drift check), else the deployment's only one. Without ``label_cutoff`` the labels known at the
end of the triggering drift interval are used (by hand: the end of the run's data interval).
"""

from __future__ import annotations

from datetime import datetime
from typing import Any

from airflow.sdk import Param, dag, task
from airflow.sdk.exceptions import AirflowSkipException

from pipelines.dags.alerts import TidemarkNotifier, gate_refused, on_failure
from pipelines.dags.common import CANARY_STARTED, NETWORK_RETRIES, RETRAIN_REQUEST, RETRY_POLICY, START_DATE, settings


@dag(dag_id="retrain", schedule=[RETRAIN_REQUEST], start_date=START_DATE, catchup=False, max_active_runs=1,
     tags=["tidemark", "models"], doc_md=__doc__,
     default_args={"retry_policy": RETRY_POLICY, "on_failure_callback": on_failure()},
     params={"window_days": Param(60, type="number", minimum=0), "max_rows": Param(200_000, type="integer", minimum=1_000),
             "epochs": Param(20, type="integer", minimum=1), "seed": Param(0, type="integer"),
             "label_cutoff": Param(None, type=["null", "string"], format="date-time"),
             "model": Param(None, type=["null", "string"],
                            description="the model to retrain (default: the one the drift event names, else the "
                                        "project's only model)")})
def retrain() -> None:
    @task(**NETWORK_RETRIES)
    def check_no_canary(params: Any = None, triggering_asset_events: Any = None) -> None:
        from pipelines.retrain_job import canary_running

        running = canary_running(_for_model(params, triggering_asset_events))
        if running:
            raise AirflowSkipException(f"not retraining: {running}; a new challenger would replace it")

    @task(**NETWORK_RETRIES, on_success_callback=[TidemarkNotifier(gate_refused)])  # MLflow: a blip retries
    def train_and_gate(params: Any = None, triggering_asset_events: Any = None, dag_run: Any = None) -> dict[str, Any]:
        from pipelines.retrain_job import RetrainRequest
        from pipelines.retrain_job import retrain as run

        trigger = _trigger(triggering_asset_events)
        cutoff = (datetime.fromisoformat(trigger["interval_end"]) if trigger and trigger.get("interval_end")
                  else dag_run.data_interval_end or dag_run.run_after)
        conf = {k: v for k, v in dict(params or {}).items() if v is not None and k != "model"}
        request = RetrainRequest.from_conf({**conf, "trigger": trigger}, label_cutoff=cutoff)
        return run(_for_model(params, triggering_asset_events), request).summary()

    @task(**NETWORK_RETRIES, outlets=[CANARY_STARTED])
    def start_canary(outcome: dict[str, Any], params: Any = None, triggering_asset_events: Any = None,
                     outlet_events: Any = None) -> dict[str, Any]:
        from pipelines.retrain_job import RetrainOutcome
        from pipelines.retrain_job import start_canary as start

        if not outcome["gate_passed"]:
            raise AirflowSkipException(f"v{outcome['version']} failed the gate: {outcome['gate_reason']}")
        summary = start(_for_model(params, triggering_asset_events), RetrainOutcome(**outcome)).summary()
        outlet_events[CANARY_STARTED].extra = summary  # canary_rollout starts on it
        return summary

    check = check_no_canary()
    trained = train_and_gate()
    check >> trained  # skipped with a canary running: a new challenger would replace the one under test
    start_canary(trained)  # type: ignore[arg-type]  # an XComArg: the task gets its value at run time


def _for_model(params: Any, events: Any) -> Any:
    from pipelines.retrain_job import settings_for_model

    return settings_for_model(settings(), dict(params or {}).get("model"), _trigger(events))


def _trigger(events: Any) -> dict[str, Any] | None:
    """The newest drift summary among the events that triggered the run, if any."""
    if not events:
        return None
    found = [e for asset_events in events.values() for e in asset_events if getattr(e, "extra", None)]
    return dict(max(found, key=lambda e: e.timestamp).extra) if found else None


retrain()
