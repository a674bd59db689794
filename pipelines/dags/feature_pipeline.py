"""``feature_pipeline``, daily: the day's feature partitions, checked, then served online.

    build_features ──► materialize ──► check_online
    (the project's       (Redis, up to     (freshness; online = offline
     feature_jobs.build;  the interval's    point-in-time values for the
     checks first)        end)              project's sampled entities; when they
                                            agree, an event of Asset
                                            tidemark://features/<view> per view
                                            loaded, through the AssetAlias
                                            "tidemark-features")

A team's DAG that needs fresh features is scheduled on ``Asset("tidemark://features/<view>")``;
the event's extra holds the rows written and the interval's end (ISO 8601, UTC). A run triggered
without a logical date (``airflow dags trigger feature_pipeline``) covers the day up to its
``run_after``.
"""

from __future__ import annotations

from datetime import timedelta
from typing import Any

from airflow.sdk import CronDataIntervalTimetable, dag, task

from pipelines.dags.alerts import on_failure
from pipelines.dags.common import (
    FEATURES_PUBLISHED,
    NETWORK_RETRIES,
    RETRY_POLICY,
    START_DATE,
    feature_asset,
    run_interval,
    settings,
)

#: The schedule's period: what a run without a data interval covers, up to its run_after.
EVERY = timedelta(days=1)


@dag(dag_id="feature_pipeline", schedule=CronDataIntervalTimetable("0 1 * * *", timezone="UTC"),
     start_date=START_DATE, catchup=False, max_active_runs=1, tags=["tidemark", "features"],
     doc_md=__doc__, default_args={"retries": 1, "retry_policy": RETRY_POLICY, "on_failure_callback": on_failure()})
def feature_pipeline() -> None:
    @task
    def build_features(data_interval_start: Any = None, data_interval_end: Any = None,
                       dag_run: Any = None) -> dict[str, Any]:
        from pipelines.feature_pipeline import build_interval

        start, end = run_interval(data_interval_start, data_interval_end, dag_run.run_after, EVERY)
        summary = build_interval(settings(), start, end)
        return summary.record() if summary is not None else {"built": False}  # no feature_jobs.build

    @task(**NETWORK_RETRIES)
    def materialize(built: dict[str, Any], data_interval_start: Any = None, data_interval_end: Any = None,
                    dag_run: Any = None) -> dict[str, Any]:
        from pipelines.feature_pipeline import materialize as load

        _, end = run_interval(data_interval_start, data_interval_end, dag_run.run_after, EVERY)
        return {r.view: r.counts.written for r in load(settings(), end)}

    @task(**NETWORK_RETRIES, outlets=[FEATURES_PUBLISHED])
    def check_online(loaded: dict[str, Any], data_interval_start: Any = None, data_interval_end: Any = None,
                     dag_run: Any = None, outlet_events: Any = None) -> dict[str, Any]:
        from pipelines.feature_pipeline import check_online as check

        start, end = run_interval(data_interval_start, data_interval_end, dag_run.run_after, EVERY)
        summary = check(settings(), start, end).summary()
        for view, written in sorted(loaded.items()):  # only reached when the check passed
            outlet_events[FEATURES_PUBLISHED].add(feature_asset(view), extra={
                "rows_written": written, "interval_end": end.isoformat()})
        return summary

    check_online(materialize(build_features()))


feature_pipeline()
