"""tidemark's Spark materialization as a Feast batch engine, so Feast's own commands use it.

    # feature_store.yaml
    batch_engine:
      type: features.materialize_engine.TidemarkSparkEngine
      partitions: 16        # optional: Spark tasks per view (default two per core)

With it, ``feast materialize``, ``feast materialize-incremental`` and a team's scripts that call
``FeatureStore.materialize*`` take the path ``FeatureClient.materialize*`` takes
(:mod:`features.materialize`: newest value per entity on Spark, packed and written by the
executors, idempotent and resumable) instead of Feast's default engine, which pulls every row to
the driver as protos and writes them one by one. There is one implementation: this module only
turns Feast's tasks into :class:`~features.materialize.Window` s and the results into jobs.

How a task's dates become a window:

* Feast's ``start``/``end`` are kept; rows must also have arrived by ``end`` (the offline
  store's arrival rule);
* a task that starts where the view's last recorded run ended (what
  ``materialize-incremental`` sends) also takes the rows that arrived since then with an older
  event time, and is widened to a full load when the online store does not hold the view under
  its current definition (after ``feast apply`` dropped a changed view's values);
* a window of a run that crashed half-way is finished first, skipping the partitions written.

Feast records each successful task's interval itself (``applies_materialization`` is False), so
its incremental bookkeeping stays Feast's. A view the engine cannot serve is refused with a
:class:`~features.errors.ConfigError` naming what to change; there is no silent fallback to the
slow path.
"""

from __future__ import annotations

import logging
import uuid
from collections.abc import Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import TYPE_CHECKING, Any, Literal

from feast.infra.common.materialization_job import (
    MaterializationJob,
    MaterializationJobStatus,
    MaterializationTask,
)
from feast.infra.compute_engines.base import ComputeEngine
from feast.repo_config import FeastConfigBaseModel
from pydantic import PositiveInt

from features.errors import ConfigError
from features.materialize import (
    MaterializeResult,
    Window,
    _Meta,
    default_start,
    last_materialized_end,
    run_windows,
)
from features.online_views import OnlineView

if TYPE_CHECKING:
    from feast.infra.registry.base_registry import BaseRegistry
    from pyspark.sql import SparkSession

__all__ = ["TidemarkMaterializationJob", "TidemarkSparkEngine", "TidemarkSparkEngineConfig", "task_windows"]

log = logging.getLogger(__name__)

_PACKED_STORE = "features.online_store.PackedRedisOnlineStore"
_EPOCH = datetime(1970, 1, 1, tzinfo=UTC)


class TidemarkSparkEngineConfig(FeastConfigBaseModel):
    """Settings of :class:`TidemarkSparkEngine`; unknown keys are rejected."""

    type: Literal["features.materialize_engine.TidemarkSparkEngine"] = (
        "features.materialize_engine.TidemarkSparkEngine")

    partitions: PositiveInt | None = None
    """Spark tasks per view, the unit of resumption (default: two per core, at least 4)."""

    progress: bool = True
    """Show a progress bar of finished partitions per view."""


@dataclass
class TidemarkMaterializationJob(MaterializationJob):
    """One view's materialization, finished (the engine runs synchronously, as Feast's local one)."""

    task: MaterializationTask
    results: list[MaterializeResult] = field(default_factory=list)
    failure: BaseException | None = None
    id: str = field(default_factory=lambda: uuid.uuid4().hex)

    def status(self) -> MaterializationJobStatus:
        return MaterializationJobStatus.ERROR if self.failure else MaterializationJobStatus.SUCCEEDED

    def error(self) -> BaseException | None:
        return self.failure

    def should_be_retried(self) -> bool:
        return False  # a re-run resumes by itself; Feast's retry would only repeat the same error

    def job_id(self) -> str:
        return self.id

    def url(self) -> str | None:
        return None


class TidemarkSparkEngine(ComputeEngine):
    """Feast's ``batch_engine`` running :func:`features.materialize.run_windows` (see the module doc)."""

    def __init__(self, *, repo_config: Any, offline_store: Any, online_store: Any, **kwargs: Any) -> None:
        super().__init__(repo_config=repo_config, offline_store=offline_store, online_store=online_store)
        self.config = TidemarkSparkEngineConfig(**kwargs)

    @property
    def supports_batch(self) -> bool:
        """All views in one call: they run as concurrent Spark jobs."""
        return True

    def update(self, project: str, views_to_delete: Sequence[Any], views_to_keep: Sequence[Any],
               entities_to_delete: Sequence[Any], entities_to_keep: Sequence[Any]) -> None:
        """Nothing to provision: the online store's own ``update`` drops a changed view's values
        (and with them its "loaded" mark, so the next incremental run reloads it)."""

    def teardown_infra(self, project: str, fvs: Sequence[Any], entities: Sequence[Any]) -> None:
        """Nothing of the engine's own outlives a run but resumption records, which expire."""

    def materialize(self, registry: BaseRegistry, tasks: MaterializationTask | list[MaterializationTask],
                    **kwargs: Any) -> list[MaterializationJob]:
        """Run every task's windows as concurrent Spark jobs; one job per task, in order, with
        the error that stopped it (the other views still run and are recorded by Feast)."""
        from features.online_store import connect
        from features.stream_views import is_stream_view

        tasks = [tasks] if isinstance(tasks, MaterializationTask) else list(tasks)
        online_config = self._online_config()
        jobs = [TidemarkMaterializationJob(task) for task in tasks]
        redis_online = connect(online_config)
        passes: list[list[tuple[TidemarkMaterializationJob, Window]]] = [[], []]
        for job in jobs:
            fv = job.task.feature_view
            try:
                self._check_view(fv)
                if is_stream_view(fv):  # window state, rebuilt from the event history
                    job.results.append(self._backfill(fv, job.task, redis_online))
                    continue
                windows = task_windows(job.task, _Meta(redis_online, job.task.project))
            except Exception as exc:  # noqa: BLE001  (this view's job carries it; the others run)
                job.failure = exc
                continue
            # a crashed run's window in the first pass: one view's windows never run side by side
            if len(windows) == 2:
                passes[0].append((job, windows[0]))
            passes[1].append((job, windows[-1]))
        for work in passes:
            work = [(job, window) for job, window in work if job.failure is None]
            if not work:
                continue
            outcomes = run_windows(self._spark(), tasks[0].project, online_config,
                                   [(job.task.feature_view, window) for job, window in work],
                                   partitions=self.config.partitions, progress=self.config.progress)
            for (job, _window), outcome in zip(work, outcomes, strict=True):
                if isinstance(outcome, MaterializeResult):
                    job.results.append(outcome)
                else:
                    job.failure = outcome
        for job in jobs:
            self._log(job)
        return list(jobs)

    def _online_config(self) -> Any:
        online_config = self.repo_config.online_store
        if getattr(online_config, "type", None) != _PACKED_STORE:
            raise ConfigError(
                f"batch_engine {TidemarkSparkEngineConfig().type} writes tidemark's packed Redis layout, "
                f"but this repo's online_store is {getattr(online_config, 'type', online_config)!r}. Set "
                f"`online_store: {{type: {_PACKED_STORE}}}` in feature_store.yaml, or remove the "
                "batch_engine entry to use Feast's default engine with this store")
        return online_config

    @staticmethod
    def _check_view(fv: Any) -> None:
        from feast.infra.offline_stores.contrib.spark_offline_store.spark_source import SparkSource

        source = getattr(fv, "batch_source", None)
        if not isinstance(source, SparkSource):
            raise ConfigError(
                f"feature view {fv.name!r} reads a {type(source).__name__}; the tidemark engine reads "
                "SparkSource (a path, table or query Spark can load). Declare its source as a "
                "SparkSource, or remove batch_engine from feature_store.yaml to use Feast's default engine")
        if getattr(fv, "feature_transformation", None) is not None:
            raise ConfigError(
                f"feature view {fv.name!r} has a transformation, which the tidemark engine does not run; "
                "compute it in a feature job (or remove batch_engine to use Feast's default engine)")

    def _spark(self) -> SparkSession:
        from features.spark import conf_settings, spark_session

        spark_conf = getattr(self.repo_config.offline_store, "spark_conf", None)
        return spark_session(conf_settings(spark_conf or {}))

    def _backfill(self, fv: Any, task: MaterializationTask, redis_online: Any) -> MaterializeResult:
        from features.online_views import WriteCounts
        from features.push import backfill

        end = _aware(task.end_time)
        done = backfill(self._spark(), fv, redis_online, task.project, at=end)
        counts = WriteCounts(written=done.counts.added, unchanged=done.counts.duplicates,
                             expired=done.counts.expired)
        return MaterializeResult(fv.name, Window(end, end), counts, partitions=0, resumed_partitions=0)

    @staticmethod
    def _log(job: TidemarkMaterializationJob) -> None:
        if job.failure is not None:
            log.error("materializing %s failed: %s", job.task.feature_view.name, job.failure)
            return
        for r in job.results:
            log.info("materialized %s [%s, %s]: %d written, %d unchanged, %d skipped, %d expired; "
                     "%d of %d partitions resumed", r.view, r.window.start.isoformat(), r.window.end.isoformat(),
                     r.counts.written, r.counts.unchanged, r.counts.skipped_older, r.counts.expired,
                     r.resumed_partitions, r.partitions)


def task_windows(task: MaterializationTask, meta: _Meta) -> list[Window]:
    """The windows that carry out Feast's ``task`` (see the module doc): a crashed run's window
    first when there is one, then the task's own."""
    fv = task.feature_view
    start, end = _aware(task.start_time), _aware(task.end_time)
    if task.disable_event_timestamp:  # Feast's "everything there is", up to the run
        window = Window(_EPOCH, end, full=True)
    elif start == _aware_or_none(last_materialized_end(fv)):  # materialize-incremental's continuation
        if meta.is_loaded(OnlineView.from_feast(fv)):
            window = Window(start, end, arrived_after=start)
        else:
            window = Window(min(start, default_start(fv, end)), end, full=True)
    else:
        window = Window(start, end, full=start <= default_start(fv, end))
    pending = meta.pending(fv.name)
    return [window] if pending is None or pending == window else [pending, window]


def _aware_or_none(moment: datetime | None) -> datetime | None:
    return None if moment is None else _aware(moment)


def _aware(moment: datetime) -> datetime:
    return moment if moment.tzinfo is not None else moment.replace(tzinfo=UTC)
