"""``drift_monitor``, hourly: has the champion's world moved? If so, ask for a retrain.

    compare ──► request_retrain
    (prediction log of the hour vs the champion's      (emits tidemark://retrain-request with
     reference profile; labelled mature payments'       the summary when the decision is
     PR-AUC vs validation; report logged to MLflow)     "drift"; skipped otherwise: no event)
"""

from __future__ import annotations

from typing import Any

from airflow.sdk import CronDataIntervalTimetable, dag, task
from airflow.sdk.exceptions import AirflowSkipException

from pipelines.dags.common import NETWORK_RETRIES, RETRAIN_REQUEST, START_DATE, settings


@dag(dag_id="drift_monitor", schedule=CronDataIntervalTimetable("15 * * * *", timezone="UTC"),
     start_date=START_DATE, catchup=False, max_active_runs=1, tags=["tidemark", "monitoring"], doc_md=__doc__)
def drift_monitor() -> None:
    @task(**NETWORK_RETRIES)
    def compare(data_interval_start: Any = None, data_interval_end: Any = None) -> dict[str, Any]:
        from pipelines.drift_job import monitor
        from pipelines.errors import NoChampionError

        try:
            return monitor(settings(), data_interval_start, data_interval_end).summary()
        except NoChampionError as exc:  # a new deployment: nothing to monitor yet, nothing broken
            raise AirflowSkipException(str(exc)) from exc

    @task(outlets=[RETRAIN_REQUEST])
    def request_retrain(summary: dict[str, Any], outlet_events: Any = None) -> dict[str, Any]:
        if summary["decision"] != "drift":
            raise AirflowSkipException(f"no retrain: {summary['decision']} ({'; '.join(summary['reasons'])})")
        outlet_events[RETRAIN_REQUEST].extra = summary
        return summary

    request_retrain(compare())


drift_monitor()
