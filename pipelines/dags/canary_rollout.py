"""``canary_rollout``: from a challenger's start to its promotion or rollback, one look every 5 minutes
(``TIDEMARK_CANARY_LOOK_EVERY_S``).

    step ──► rollout_goes_on ──► look_again
    (advance shadow → 5 → 25 → 50    (false once promoted    (queues the next run of this DAG,
     → 100 %, then promote; hold;     or rolled back: the     to start 5 minutes after this
     or roll back, judged on the      chain ends; skipped     look: Airflow holds it until its
     servers' evidence at the run's   with no canary)         run_after)
     look time; skipped with no
     canary)

Started by ``retrain`` when it starts a canary (the Asset ``tidemark://canary-started``), or by
hand (``airflow dags trigger canary_rollout``, e.g. after ``tidemark canary start``); each run then
queues the next while the rollout goes on (with the model in its conf: a project's models each
have their own canary), so the UI lists one run per look of a live rollout
instead of a skipped run every 5 minutes of the day. ``max_active_runs=1``: the queued look waits
for the current one. The look time is the run's data interval end (a run by hand with a logical
date), else its ``run_after`` (the time it was queued for).
"""

from __future__ import annotations

from datetime import timedelta
from typing import Any

from airflow.providers.standard.operators.trigger_dagrun import TriggerDagRunOperator
from airflow.sdk import dag, task
from airflow.sdk.exceptions import AirflowSkipException

from pipelines.dags.alerts import TidemarkNotifier, canary_decided, on_failure
from pipelines.dags.common import CANARY_STARTED, NETWORK_RETRIES, RETRY_POLICY, START_DATE, settings

DAG_ID = "canary_rollout"


class _QueueNextLook(TriggerDagRunOperator):
    """Airflow's trigger, with ``run_after`` rendered from the step's XCom like its other fields."""

    template_fields = (*TriggerDagRunOperator.template_fields, "run_after")


@dag(dag_id=DAG_ID, schedule=[CANARY_STARTED], start_date=START_DATE, catchup=False, max_active_runs=1,
     tags=["tidemark", "serving"], doc_md=__doc__,
     default_args={"retry_policy": RETRY_POLICY, "on_failure_callback": on_failure()})
def canary_rollout() -> None:
    @task(**NETWORK_RETRIES, on_success_callback=[TidemarkNotifier(canary_decided)])
    def step(data_interval_end: Any = None, dag_run: Any = None, triggering_asset_events: Any = None
             ) -> dict[str, Any]:
        import dataclasses

        from pipelines import canary

        model = _model(dag_run, triggering_asset_events)
        s = dataclasses.replace(settings(), model_name=model) if model else settings()
        if canary.status(s).mode == "off":
            raise AirflowSkipException("no canary is running")
        now = data_interval_end or dag_run.run_after
        outcome = canary.step(s, now=now)
        return {"model": s.model_name, "action": outcome.action, "reasons": outcome.reasons, "notes": outcome.notes,
                "mode": outcome.state.mode, "weight_pct": outcome.state.weight_pct, "step": outcome.state.step,
                "next_look": (now + timedelta(seconds=s.canary_look_every_s)).isoformat()}

    @task.short_circuit
    def rollout_goes_on(outcome: dict[str, Any]) -> bool:
        return bool(outcome["mode"] != "off")  # off: promoted or rolled back

    look = step()
    rollout_goes_on(look) >> _QueueNextLook(  # type: ignore[arg-type]  # XComArg: its value at run time
        task_id="look_again", trigger_dag_id=DAG_ID, retries=2,
        run_after="{{ ti.xcom_pull(task_ids='step')['next_look'] }}",
        trigger_run_id="look__{{ ti.xcom_pull(task_ids='step')['next_look'] }}",
        conf={"model": "{{ ti.xcom_pull(task_ids='step')['model'] }}"},
        skip_when_already_exists=True)  # a rerun of this look does not queue a second chain


def _model(dag_run: Any, events: Any) -> str | None:
    """The model whose canary this run looks at: the run's conf ``model`` (the chain passes it on;
    by hand: ``{"model": …}``), else the one the newest canary-started event names, else None (the
    deployment's ``TIDEMARK_MODEL_NAME``)."""
    conf = dict(getattr(dag_run, "conf", None) or {})
    if conf.get("model"):
        return str(conf["model"])
    found = [e for asset_events in (events or {}).values() for e in asset_events if (e.extra or {}).get("model")]
    return str(max(found, key=lambda e: e.timestamp).extra["model"]) if found else None


canary_rollout()
