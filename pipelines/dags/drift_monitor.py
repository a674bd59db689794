"""``drift_monitor``, hourly: has each model's world moved? If so, ask for its retrain.

    models ──► compare (one mapped task per model) ──► request_retrain (one per model compared)
    (the project's models,   (its prediction log of the hour       (emits tidemark://retrain-request
     or the bundled           vs its champion's reference profile;  with the summary, which names
     example's one)           its task's metric on labelled rows    the model, when the decision is
                              whose labels are final vs its         "drift"; skipped otherwise)
                              validation value; report to the
                              day's MLflow run, every hour)

Dynamic task mapping over the models: a team with three models gets three drift checks in one
DAG run, each failing, retrying or skipping on its own (a model without a champion yet skips its
check; the others' drift still asks for their retrain). A run triggered without a logical date
(``airflow dags trigger drift_monitor``) judges the hour up to its ``run_after``.
"""

from __future__ import annotations

from datetime import timedelta
from typing import Any

from airflow.sdk import CronDataIntervalTimetable, TriggerRule, dag, task
from airflow.sdk.exceptions import AirflowSkipException

from pipelines.dags.alerts import TidemarkNotifier, drift_found, on_failure
from pipelines.dags.common import NETWORK_RETRIES, RETRAIN_REQUEST, RETRY_POLICY, START_DATE, run_interval, settings

#: The schedule's period: what a run without a data interval judges, up to its run_after.
EVERY = timedelta(hours=1)


@dag(dag_id="drift_monitor", schedule=CronDataIntervalTimetable("15 * * * *", timezone="UTC"),
     start_date=START_DATE, catchup=False, max_active_runs=1, tags=["tidemark", "monitoring"], doc_md=__doc__,
     default_args={"retry_policy": RETRY_POLICY, "on_failure_callback": on_failure()})
def drift_monitor() -> None:
    @task
    def models() -> list[str]:
        from pipelines.project import model_names

        return model_names(settings())

    @task(**NETWORK_RETRIES)
    def compare(model: str, data_interval_start: Any = None, data_interval_end: Any = None,
                dag_run: Any = None) -> dict[str, Any]:
        import dataclasses

        from pipelines.drift_job import monitor
        from pipelines.errors import NoChampionError

        start, end = run_interval(data_interval_start, data_interval_end, dag_run.run_after, EVERY)
        try:
            mine = dataclasses.replace(settings(), model_name=model)
            return monitor(mine, start, end).summary()
        except NoChampionError as exc:  # a new deployment: nothing to monitor yet, nothing broken
            raise AirflowSkipException(str(exc)) from exc

    # none_failed: request_retrain is mapped over the compares that returned a summary, and a model
    # whose compare skipped (no champion yet) must not skip the others' requests with it, as
    # all_success would (its unexpanded task sees a skipped upstream); a failed compare still fails it
    @task(outlets=[RETRAIN_REQUEST], trigger_rule=TriggerRule.NONE_FAILED,
          on_success_callback=[TidemarkNotifier(drift_found)])
    def request_retrain(summary: dict[str, Any], outlet_events: Any = None) -> dict[str, Any]:
        if summary["decision"] != "drift":
            raise AirflowSkipException(f"no retrain of {summary['model']}: {summary['decision']} "
                                       f"({'; '.join(summary['reasons'])})")
        outlet_events[RETRAIN_REQUEST].extra = summary
        return summary

    request_retrain.expand(summary=compare.expand(model=models()))


drift_monitor()
