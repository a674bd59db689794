"""``canary_rollout``, every 5 minutes: one controller look at the running canary.

    step: advance (shadow → 5 → 25 → 50 → 100 %, then promote), hold, or roll back, judged on the
    servers' evidence (pipelines.canary.step at the interval's end); skipped with no canary
"""

from __future__ import annotations

from typing import Any

from airflow.sdk import CronDataIntervalTimetable, dag, task
from airflow.sdk.exceptions import AirflowSkipException

from pipelines.dags.alerts import TidemarkNotifier, canary_decided, on_failure
from pipelines.dags.common import NETWORK_RETRIES, START_DATE, settings


@dag(dag_id="canary_rollout", schedule=CronDataIntervalTimetable("*/5 * * * *", timezone="UTC"),
     start_date=START_DATE, catchup=False, max_active_runs=1, tags=["tidemark", "serving"], doc_md=__doc__,
     default_args={"on_failure_callback": on_failure()})
def canary_rollout() -> None:
    @task(**NETWORK_RETRIES, on_success_callback=[TidemarkNotifier(canary_decided)])
    def step(data_interval_end: Any = None) -> dict[str, Any]:
        from pipelines import canary

        s = settings()
        if canary.status(s).mode == "off":
            raise AirflowSkipException("no canary is running")
        outcome = canary.step(s, now=data_interval_end)
        return {"model": s.model_name, "action": outcome.action, "reasons": outcome.reasons, "notes": outcome.notes,
                "mode": outcome.state.mode, "weight_pct": outcome.state.weight_pct, "step": outcome.state.step}

    step()


canary_rollout()
