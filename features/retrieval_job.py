"""Feast ``RetrievalJob``s of the Spark as-of offline store.

A job is lazy: nothing runs on Spark until ``to_df``/``to_arrow``/``to_spark_df`` is called.
When the entity frame is a pandas DataFrame, only the row id, the join keys and the prediction
time (as epoch microseconds) travel to Spark; the feature columns come back and are attached to
the caller's own frame by row id, so entity columns are never round-tripped or re-typed.
"""

from __future__ import annotations

import shutil
import tempfile
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import TYPE_CHECKING, Any

import pandas as pd
import pyarrow as pa
from feast.infra.offline_stores.offline_store import RetrievalJob, RetrievalMetadata

from features import entity_frame as ef
from features.asof_join import ROW_ID, asof_join, quote
from features.spark import is_local
from features.window_join import WindowViewSpec, window_join

if TYPE_CHECKING:
    from feast.on_demand_feature_view import OnDemandFeatureView
    from feast.repo_config import RepoConfig
    from feast.saved_dataset import SavedDatasetStorage
    from pyspark.sql import DataFrame, SparkSession

    from features.offline_store import _ViewPlan, _WindowPlan


class SparkAsofRetrievalJob(RetrievalJob):
    """The result of ``get_historical_features``: one row per entity row, in input order."""

    def __init__(
        self,
        *,
        spark: SparkSession,
        entity_df: Any,
        plans: list[_ViewPlan | _WindowPlan],
        filter_by_created: bool,
        full_feature_names: bool,
        feature_refs: list[str],
        on_demand_feature_views: list[OnDemandFeatureView],
        config: RepoConfig,
        staging_location: str | None = None,
    ) -> None:
        super().__init__()
        self._spark = spark
        self._staging_location = staging_location
        self._plans = plans
        self._filter_by_created = filter_by_created
        self._full_feature_names = full_feature_names
        self._odfvs = on_demand_feature_views
        self._config = config
        join_keys = sorted({k for p in plans for k in p.join_keys})
        if isinstance(entity_df, pd.DataFrame):
            self._entities = ef.check_pandas(entity_df, join_keys)
        else:
            self._entities = ef.check_spark(entity_df, join_keys)
        self._join_keys = join_keys
        self._metadata = RetrievalMetadata(
            features=feature_refs,
            keys=[c for c in self._entities.original.columns if c != self._entities.timestamp_col],
            min_event_timestamp=self._entities.min_t,
            max_event_timestamp=self._entities.max_t,
        )

    @property
    def full_feature_names(self) -> bool:
        return self._full_feature_names

    @property
    def on_demand_feature_views(self) -> list[OnDemandFeatureView]:
        return self._odfvs

    @property
    def metadata(self) -> RetrievalMetadata | None:
        return self._metadata

    @property
    def timestamp_col(self) -> str:
        return self._entities.timestamp_col

    def to_spark_df(self) -> DataFrame:
        """The joined frame on Spark, sorted in the entity frame's order."""
        entities = ef.full_spark_frame(self._spark, self._entities)
        joined = self._join(entities, self._entities.timestamp_col)
        return joined.orderBy(ROW_ID).drop(ROW_ID)

    def _to_df_internal(self, timeout: int | None = None) -> pd.DataFrame:
        if not self._entities.is_pandas:
            return self.to_spark_df().toPandas()
        with _staging_dir(self._spark, self._staging_location) as staging:
            slim = ef.slim_spark_frame(self._spark, self._entities, self._join_keys, staging)
            joined = self._join(slim, ef.MICROS_COL)
            features: pd.DataFrame = joined.drop(*self._join_keys, ef.MICROS_COL).toPandas()
        features = features.sort_values(ROW_ID, kind="stable").drop(columns=ROW_ID).reset_index(drop=True)
        entity_df: pd.DataFrame = self._entities.original
        clashes = [c for c in features.columns if c in entity_df.columns]
        base = entity_df.drop(columns=clashes) if clashes else entity_df
        return pd.concat([base.reset_index(drop=True), features], axis=1)

    def _to_arrow_internal(self, timeout: int | None = None) -> pa.Table:
        return pa.Table.from_pandas(self._to_df_internal(timeout=timeout), preserve_index=False)

    def persist(self, storage: SavedDatasetStorage, allow_overwrite: bool | None = False,
                timeout: int | None = None) -> None:
        """Write the result where a ``SavedDatasetSparkStorage`` points (path or table)."""
        persist_spark_df(self.to_spark_df(), storage, allow_overwrite=bool(allow_overwrite))

    def _join(self, entities: DataFrame, timestamp_col: str) -> DataFrame:
        """The as-of join of the plain views, then the window join of the stream views."""
        specs = [p.spec(self._spark, self._entities.min_t, self._entities.max_t) for p in self._plans]
        windows = [s for s in specs if isinstance(s, WindowViewSpec)]
        joined = asof_join(entities, [s for s in specs if not isinstance(s, WindowViewSpec)],
                           timestamp_col=timestamp_col, filter_by_created=self._filter_by_created)
        if not windows:
            return joined
        # the window join appends its columns last: put every view's features back in plan order
        outputs = [name for s in specs for name in (
            [n for _, n in s.outputs] if isinstance(s, WindowViewSpec) else [n for _, n in s.features])]
        joined = window_join(joined, windows, timestamp_col=timestamp_col)
        first = [c for c in joined.columns if c not in set(outputs)]
        return joined.select(*[quote(c) for c in (*first, *outputs)])


class SparkFrameJob(RetrievalJob):
    """A job over a lazily built Spark DataFrame (the pulls Feast uses to materialize)."""

    def __init__(self, spark: SparkSession, build: Callable[[], DataFrame], config: RepoConfig) -> None:
        super().__init__()
        self._spark = spark
        self._build = build
        self._config = config

    @property
    def full_feature_names(self) -> bool:
        return False

    @property
    def on_demand_feature_views(self) -> list[OnDemandFeatureView]:
        return []

    def to_spark_df(self) -> DataFrame:
        return self._build()

    def _to_df_internal(self, timeout: int | None = None) -> pd.DataFrame:
        return self._to_arrow_internal(timeout).to_pandas()

    def _to_arrow_internal(self, timeout: int | None = None) -> pa.Table:
        return self._build().toArrow()

    def persist(self, storage: SavedDatasetStorage, allow_overwrite: bool | None = False,
                timeout: int | None = None) -> None:
        persist_spark_df(self.to_spark_df(), storage, allow_overwrite=bool(allow_overwrite))


@contextmanager
def _staging_dir(spark: SparkSession, location: str | None) -> Iterator[Path | None]:
    """A private folder for the entity frame, removed afterwards.

    ``location`` must be readable by every executor; without one, a local temp folder is used
    when Spark runs in local mode, and nothing (``createDataFrame``) otherwise.
    """
    if location is None and not is_local(spark):
        yield None
        return
    parent = Path(location) if location else None
    if parent is not None:
        parent.mkdir(parents=True, exist_ok=True)
    folder = Path(tempfile.mkdtemp(prefix="tidemark-entities-", dir=parent))
    try:
        yield folder / "rows"
    finally:
        shutil.rmtree(folder, ignore_errors=True)


def persist_spark_df(df: DataFrame, storage: SavedDatasetStorage, *, allow_overwrite: bool) -> None:
    """Save ``df`` to a ``SavedDatasetSparkStorage`` location: a path, or a table name."""
    from feast.infra.offline_stores.contrib.spark_offline_store.spark_source import SavedDatasetSparkStorage

    from features.errors import FeatureStoreError

    if not isinstance(storage, SavedDatasetSparkStorage):
        raise FeatureStoreError(f"cannot persist to {type(storage).__name__}; use SavedDatasetSparkStorage")
    options = storage.spark_options
    mode = "overwrite" if allow_overwrite else "error"
    if options.path:
        df.write.format(options.file_format or "parquet").mode(mode).save(options.path)
    elif options.table:
        df.write.mode(mode).saveAsTable(options.table)
    else:
        raise FeatureStoreError("SavedDatasetSparkStorage needs a path or a table")
