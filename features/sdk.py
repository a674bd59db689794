"""The notebook SDK: ``from features.sdk import FeatureClient``.

    >>> client = FeatureClient()                      # settings from TIDEMARK_* variables
    >>> frame = client.training_frame(entity_df, ["customer_txn_24h:amt_sum_24h"])

``FeatureClient`` talks to Feast with tidemark's offline store plugin; every feature value it
returns is point-in-time correct for its entity row.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

import pandas as pd

from features.errors import EntityFrameError, UnknownFeatureError
from features.settings import Settings

if TYPE_CHECKING:
    from feast import FeatureStore
    from pyspark.sql import DataFrame, SparkSession

__all__ = ["FeatureClient"]


class FeatureClient:
    """Training frames (and, later, online features) from tidemark's Feast project."""

    def __init__(self, settings: Settings | None = None, *, repo_path: Path | None = None) -> None:
        """Use ``settings`` (default: from the environment); ``repo_path`` selects another Feast
        repo (a folder with a ``feature_store.yaml``) instead of tidemark's own."""
        self.settings = settings or Settings.from_env()
        self._repo_path = repo_path
        self._store: FeatureStore | None = None

    @property
    def store(self) -> FeatureStore:
        """The Feast ``FeatureStore`` (created on first use; tidemark's definitions applied)."""
        if self._store is None:
            self._store = self._open_store()
        return self._store

    @property
    def spark(self) -> SparkSession:
        """The Spark session the offline store uses (started on first use)."""
        from features.spark import spark_session

        return spark_session(self.settings.spark)

    def apply(self) -> None:
        """Register tidemark's entities and feature views in the Feast registry."""
        from features.feature_views import feature_definitions

        self.store.apply(feature_definitions(self.settings.offline_dir))

    def feature_references(self) -> list[str]:
        """Every registered ``view:feature`` reference."""
        return sorted(
            f"{fv.name}:{feature.name}"
            for fv in self.store.list_feature_views()
            for feature in fv.features
        )

    def training_frame(
        self,
        entity_df: pd.DataFrame | DataFrame,
        features: Sequence[str],
        *,
        as_spark: bool = False,
        full_feature_names: bool = False,
    ) -> pd.DataFrame | DataFrame:
        """Point-in-time correct features for every row of ``entity_df``.

        ``entity_df`` holds the join keys and an ``event_timestamp`` column (the prediction time,
        UTC; naive values are read as UTC). The result has one row per input row, in input order,
        with the input's columns followed by the features; missing values are null.
        """
        features = list(features)
        self._check_references(features)
        self._check_entity_frame(entity_df)
        job = self.store.get_historical_features(
            entity_df=entity_df, features=features, full_feature_names=full_feature_names
        )
        if as_spark:
            return job.to_spark_df()  # type: ignore[attr-defined]  # our store's jobs are Spark-backed
        return job.to_df()

    def _check_references(self, features: list[str]) -> None:
        if not features:
            raise UnknownFeatureError("", self.feature_references())
        known = set(self.feature_references())
        for ref in features:
            if ref not in known:
                raise UnknownFeatureError(ref, known)

    def _check_entity_frame(self, entity_df: Any) -> None:
        from features.entity_frame import check_pandas

        if isinstance(entity_df, pd.DataFrame):
            check_pandas(entity_df, [])
        elif not hasattr(entity_df, "schema"):
            raise EntityFrameError(
                f"entity_df is a {type(entity_df).__name__}; pass a pandas or Spark DataFrame"
            )

    def _open_store(self) -> FeatureStore:
        from feast import FeatureStore

        if self._repo_path is not None:
            return FeatureStore(repo_path=str(self._repo_path))
        _ = self.spark  # started with tidemark's settings, so the offline store joins it
        store = FeatureStore(config=self._repo_config())
        registry = self.settings.registry_path
        if not registry.exists():
            from features.feature_views import feature_definitions

            store.apply(feature_definitions(self.settings.offline_dir))
        return store

    def _repo_config(self) -> Any:
        from feast.repo_config import RepoConfig

        feast_dir = self.settings.home / "feast"
        feast_dir.mkdir(parents=True, exist_ok=True)
        return RepoConfig(
            project=self.settings.project,
            provider="local",
            registry={"registry_type": "file", "path": str(self.settings.registry_path), "cache_ttl_seconds": 60},
            offline_store={"type": "features.offline_store.SparkAsofOfflineStore"},
            online_store={"type": "sqlite", "path": str(feast_dir / "online.db")},
            entity_key_serialization_version=3,
            repo_path=str(Path(__file__).parent / "repo"),
        )
