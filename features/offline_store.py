"""Feast offline store plugin: point-in-time joins on Spark with a sort-based as-of strategy.

Select it from any Feast repo's ``feature_store.yaml``::

    offline_store:
      type: features.offline_store.SparkAsofOfflineStore
      filter_by_created_timestamp: true     # default; false reproduces Feast's own semantics
      spark_conf: {spark.master: "local[*]"}

It reads Feast ``SparkSource`` definitions (``path``, ``table`` or ``query``). The join itself
is :func:`features.asof_join.asof_join`; this module maps Feast's feature views onto it.
"""

from __future__ import annotations

from collections.abc import Callable
from datetime import datetime, timedelta
from typing import TYPE_CHECKING, Any, Literal

from feast.infra.offline_stores.contrib.spark_offline_store.spark_source import SparkSource
from feast.infra.offline_stores.offline_store import OfflineStore, RetrievalJob
from feast.repo_config import FeastConfigBaseModel, RepoConfig
from pydantic import model_validator

from features.asof_join import ViewSpec, prune_source, quote
from features.errors import FeatureStoreError
from features.retrieval_job import SparkAsofRetrievalJob, SparkFrameJob
from features.stream_views import StreamView, is_stream_view
from features.window_join import WindowViewSpec

if TYPE_CHECKING:
    import pandas as pd
    import pyarrow
    from feast.feature_view import FeatureView
    from feast.infra.registry.base_registry import BaseRegistry
    from pyspark.sql import DataFrame, SparkSession


class SparkAsofOfflineStoreConfig(FeastConfigBaseModel):
    """Settings of :class:`SparkAsofOfflineStore`; unknown keys are rejected."""

    type: Literal["features.offline_store.SparkAsofOfflineStore"] = "features.offline_store.SparkAsofOfflineStore"

    spark_conf: dict[str, str] | None = None
    """Settings of the session tidemark starts when none is active: ``spark.master``,
    ``spark.driver.memory``, ``spark.sql.shuffle.partitions`` and any other Spark key."""

    filter_by_created_timestamp: bool = True
    """Only rows created at or before the prediction time are eligible (late data stays
    invisible until it arrived). False: the created timestamp only breaks ties, as in Feast."""

    staging_location: str | None = None
    """A folder every Spark executor can read, where a pandas entity frame is staged as Parquet.
    Unset: a local temp folder in local mode, else the frame goes through ``createDataFrame``."""

    @model_validator(mode="after")
    def _name_worker_python(self) -> SparkAsofOfflineStoreConfig:
        # Feast's own code may start the Spark session before this store does (its Spark source
        # reads a table's columns through a session it starts when none is active): name the
        # workers' interpreter now, when Feast reads feature_store.yaml, so that any session has it.
        from features.spark import spark_environment

        spark_environment(self.spark_conf)
        return self


class SparkAsofOfflineStore(OfflineStore):
    """Feast ``OfflineStore`` whose point-in-time join is one sort per join-key set."""

    supports_filter_by_created_timestamp = True

    @staticmethod
    def get_historical_features(
        config: RepoConfig,
        feature_views: list[FeatureView],
        feature_refs: list[str],
        entity_df: pd.DataFrame | str | DataFrame | None,
        registry: BaseRegistry,
        project: str,
        full_feature_names: bool = False,
        **kwargs: Any,
    ) -> RetrievalJob:
        """Point-in-time correct features for each row of ``entity_df`` (see ``asof_join``)."""
        from feast.on_demand_feature_view import OnDemandFeatureView

        store_config = _store_config(config)
        spark = _spark(store_config)
        filter_created = store_config.filter_by_created_timestamp or bool(kwargs.get("filter_by_created_timestamp"))
        requested = _requested_features(feature_refs)
        plans: list[_ViewPlan | _WindowPlan] = [
            (_WindowPlan if is_stream_view(fv) else _ViewPlan)(
                fv, requested.get(fv.projection.name_to_use(), []), full_feature_names)
            for fv in feature_views if fv.projection.name_to_use() in requested]
        if entity_df is None:
            entity_df = _entities_from_sources(spark, plans, kwargs.get("start_date"), kwargs.get("end_date"))
        elif isinstance(entity_df, str):
            entity_df = spark.sql(entity_df)
        return SparkAsofRetrievalJob(
            spark=spark,
            entity_df=entity_df,
            plans=plans,
            filter_by_created=filter_created,
            full_feature_names=full_feature_names,
            feature_refs=feature_refs,
            on_demand_feature_views=OnDemandFeatureView.get_requested_odfvs(feature_refs, project, registry),
            config=config,
            staging_location=store_config.staging_location,
        )

    @staticmethod
    def pull_latest_from_table_or_query(
        config: RepoConfig,
        data_source: Any,
        join_key_columns: list[str],
        feature_name_columns: list[str],
        timestamp_field: str,
        created_timestamp_column: str | None,
        start_date: datetime,
        end_date: datetime,
    ) -> RetrievalJob:
        """Newest row per entity with event time in ``[start_date, end_date]``.

        Newest means greatest (event timestamp, created timestamp). With
        ``filter_by_created_timestamp`` on, rows created after ``end_date`` are ignored, so the
        result is what a point-in-time join at ``end_date`` would return (before any TTL).
        """
        store_config = _store_config(config)
        spark = _spark(store_config)

        def build() -> DataFrame:
            src = _bounded(spark, data_source, timestamp_field, created_timestamp_column, start_date, end_date,
                           filter_created=store_config.filter_by_created_timestamp)
            return latest_per_entity(src, join_key_columns, feature_name_columns, timestamp_field,
                                     created_timestamp_column)

        return SparkFrameJob(spark, build, config)

    @staticmethod
    def pull_all_from_table_or_query(
        config: RepoConfig,
        data_source: Any,
        join_key_columns: list[str],
        feature_name_columns: list[str],
        timestamp_field: str,
        created_timestamp_column: str | None = None,
        start_date: datetime | None = None,
        end_date: datetime | None = None,
    ) -> RetrievalJob:
        """Every row with event time in ``[start_date, end_date]`` (either bound optional).

        With ``filter_by_created_timestamp`` on, rows created after ``end_date`` are left out as in
        :meth:`pull_latest_from_table_or_query`: Feast materializes through this method, and a row
        that had not arrived by ``end_date`` must not reach the online store as of ``end_date``.
        """
        from pyspark.sql import functions as F

        store_config = _store_config(config)
        spark = _spark(store_config)
        columns = [*join_key_columns, *feature_name_columns, timestamp_field]
        if created_timestamp_column:
            columns.append(created_timestamp_column)

        def build() -> DataFrame:
            src = _bounded(spark, data_source, timestamp_field, created_timestamp_column, start_date, end_date,
                           filter_created=store_config.filter_by_created_timestamp)
            return src.select(*[F.col(quote(c)) for c in dict.fromkeys(columns)])

        return SparkFrameJob(spark, build, config)

    @staticmethod
    def offline_write_batch(
        config: RepoConfig,
        feature_view: FeatureView,
        table: pyarrow.Table,
        progress: Callable[[int], Any] | None,
    ) -> None:
        """Append ``table`` to the view's Parquet batch source, atomically, partitioned as the
        feature builds write it (see :mod:`features.offline_write`): what
        ``push(..., to=PushMode.OFFLINE)`` and ``write_to_offline_store`` call."""
        from features.offline_write import append_to_source

        source = feature_view.batch_source
        if not isinstance(source, SparkSource):
            raise FeatureStoreError(
                f"feature view {feature_view.name!r} reads a {type(source).__name__}; SparkAsofOfflineStore "
                "writes to SparkSource Parquet paths only")
        written = append_to_source(_spark(_store_config(config)), feature_view.name, source, table)
        if progress is not None:
            progress(written)


class _ViewPlan:
    """What the join needs from one Feast feature view, with Feast's name mappings applied."""

    def __init__(self, fv: FeatureView, features: list[str], full_names: bool) -> None:
        source = fv.batch_source
        if not isinstance(source, SparkSource):
            raise FeatureStoreError(
                f"feature view {fv.name!r} reads a {type(source).__name__}; SparkAsofOfflineStore "
                "reads SparkSource (path, table or query): define the view's source as a SparkSource"
            )
        reverse = {v: k for k, v in source.field_mapping.items()}
        self.name = fv.projection.name_to_use()
        self.source = source
        self.join_keys = tuple(fv.projection.join_key_map.get(e.name, e.name) for e in fv.entity_columns)
        self.source_keys = tuple(reverse.get(e.name, e.name) for e in fv.entity_columns)
        self.timestamp_field = reverse.get(source.timestamp_field, source.timestamp_field)
        created = source.created_timestamp_column or None
        self.created_timestamp_column = reverse.get(created, created) if created else None
        self.date_partition_column = source.date_partition_column or None
        self.date_format = source.date_partition_column_format or "%Y-%m-%d"
        out = (lambda f: f"{self.name}__{f}") if full_names else (lambda f: f)
        self.features = tuple((reverse.get(f, f), out(f)) for f in features)
        self.ttl = fv.ttl if isinstance(fv.ttl, timedelta) and fv.ttl > timedelta(0) else None

    def spec(self, spark: SparkSession, min_t: datetime | None, max_t: datetime | None) -> ViewSpec:
        """The join's view, with the source pruned to rows that can matter for ``[min_t, max_t]``."""
        lower = (min_t - self.ttl) if (min_t is not None and self.ttl is not None) else None
        src = prune_source(load_source(spark, self.source), self.timestamp_field, min_t=lower, max_t=max_t,
                           date_partition_column=self.date_partition_column, date_format=self.date_format)
        return ViewSpec(self.name, src, self.join_keys, self.source_keys, self.timestamp_field,
                        self.created_timestamp_column, self.features, self.ttl)


class _WindowPlan:
    """What the window join needs from one stream feature view (its push source's batch source)."""

    def __init__(self, fv: FeatureView, features: list[str], full_names: bool) -> None:
        self.view = StreamView.from_feast(fv)
        source = fv.batch_source
        if not isinstance(source, SparkSource):
            raise FeatureStoreError(
                f"stream feature view {fv.name!r} keeps its event history in a {type(source).__name__}; "
                "SparkAsofOfflineStore reads SparkSource: give its PushSource a SparkSource batch_source")
        if source.field_mapping:
            raise FeatureStoreError(f"stream feature view {fv.name!r}: its batch source maps fields "
                                    f"{source.field_mapping}; name the columns as the pushed events do")
        self.name = fv.projection.name_to_use()
        self.source = source
        self.join_keys = tuple(fv.projection.join_key_map.get(e.name, e.name) for e in fv.entity_columns)
        self.source_keys = tuple(e.name for e in fv.entity_columns)
        self.date_partition_column = source.date_partition_column or None
        self.date_format = source.date_partition_column_format or "%Y-%m-%d"
        index = {name: i for i, name in enumerate(self.view.output_names)}
        self.outputs = tuple((index[f], f"{self.name}__{f}" if full_names else f) for f in features)

    def spec(self, spark: SparkSession, min_t: datetime | None, max_t: datetime | None) -> WindowViewSpec:
        """The events that can fall in a window of an entity row in ``[min_t, max_t]``."""
        lower = None if min_t is None else min_t - timedelta(microseconds=self.view.horizon_us)
        src = prune_source(load_source(spark, self.source), self.view.timestamp_field, min_t=lower, max_t=max_t,
                           date_partition_column=self.date_partition_column, date_format=self.date_format)
        return WindowViewSpec(self.view, src, self.join_keys, self.source_keys, self.outputs)


def latest_per_entity(src: DataFrame, join_keys: list[str], features: list[str], timestamp_field: str,
                      created_column: str | None) -> DataFrame:
    """The row with the greatest (event, created) time per entity of ``src``: join keys, features,
    the timestamp and (if given) the created column. One aggregation, no sort."""
    from pyspark.sql import functions as F

    created = F.col(quote(created_column)) if created_column else F.lit(None)
    payload = [F.col(quote(timestamp_field)).alias("ev"), created.alias("cr"),
               *[F.col(quote(c)).alias(f"v{i}") for i, c in enumerate(features)]]
    keys = [F.col(quote(k)) for k in join_keys]
    best = F.max(F.struct(*payload)).alias("b")
    latest = src.groupBy(*keys).agg(best) if keys else src.agg(best)
    outputs = [F.col(quote(k)) for k in join_keys]
    outputs += [F.col(f"b.v{i}").alias(c) for i, c in enumerate(features)]
    outputs.append(F.col("b.ev").alias(timestamp_field))
    if created_column:
        outputs.append(F.col("b.cr").alias(created_column))
    return latest.select(*outputs)


def load_source(spark: SparkSession, source: SparkSource) -> DataFrame:
    """The source's rows as a Spark DataFrame (table, query, or files at a path)."""
    if source.table:
        return spark.table(source.table)
    if source.query:
        return spark.sql(source.query)
    if source.path:
        from feast.errors import DataSourceNotFoundException

        try:
            return spark.read.format(source.file_format or "parquet").load(source.path)
        except Exception as exc:  # Spark raises AnalysisException subclasses for missing paths
            if "PATH_NOT_FOUND" in str(exc) or "does not exist" in str(exc):
                raise DataSourceNotFoundException(source.path) from exc
            raise
    raise FeatureStoreError(f"SparkSource {source.name!r} has no table, query or path; give it one")


def _bounded(
    spark: SparkSession,
    source: SparkSource,
    timestamp_field: str,
    created_column: str | None,
    start: datetime | None,
    end: datetime | None,
    *,
    filter_created: bool,
) -> DataFrame:
    from pyspark.sql import functions as F

    src = prune_source(load_source(spark, source), timestamp_field, min_t=start, max_t=end,
                       date_partition_column=source.date_partition_column or None,
                       date_format=source.date_partition_column_format or "%Y-%m-%d")
    if filter_created and created_column and end is not None:
        src = src.where(F.col(quote(created_column)).isNull() | (F.col(quote(created_column)) <= F.lit(end)))
    return src


def _entities_from_sources(
    spark: SparkSession, plans: list[_ViewPlan | _WindowPlan], start: datetime | None, end: datetime | None
) -> DataFrame:
    """Entity rows for Feast's entity-less mode: every entity seen in ``[start, end]``, at ``end``."""
    from pyspark.sql import functions as F

    if end is None:
        raise FeatureStoreError("without an entity dataframe, give end_date (and usually start_date)")
    keys = sorted({k for p in plans for k in p.join_keys})
    frames = []
    for plan in plans:
        timestamp = plan.view.timestamp_field if isinstance(plan, _WindowPlan) else plan.timestamp_field
        src = _bounded(spark, plan.source, timestamp, None, start, end, filter_created=False)
        cols = [F.col(quote(s)).alias(k) for s, k in zip(plan.source_keys, plan.join_keys)]
        cols += [F.lit(None).alias(k) for k in keys if k not in plan.join_keys]
        frames.append(src.select(*cols).select(*keys))
    union = frames[0]
    for frame in frames[1:]:
        union = union.unionByName(frame, allowMissingColumns=True)
    return union.distinct().withColumn("event_timestamp", F.lit(end).cast("timestamp"))


def _requested_features(feature_refs: list[str]) -> dict[str, list[str]]:
    requested: dict[str, list[str]] = {}
    for ref in feature_refs:
        view, _, feature = ref.partition(":")
        requested.setdefault(view, [])
        if feature not in requested[view]:
            requested[view].append(feature)
    return requested


def _store_config(config: RepoConfig) -> SparkAsofOfflineStoreConfig:
    store_config = config.offline_store
    if not isinstance(store_config, SparkAsofOfflineStoreConfig):
        raise FeatureStoreError(
            f"offline_store is {type(store_config).__name__}; expected SparkAsofOfflineStoreConfig"
        )
    return store_config


def _spark(store_config: SparkAsofOfflineStoreConfig) -> SparkSession:
    from features.spark import conf_settings, spark_session

    return spark_session(conf_settings(store_config.spark_conf or {}))
