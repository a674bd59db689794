"""The notebook SDK: ``from features.sdk import FeatureClient``.

    >>> client = FeatureClient()                      # settings from TIDEMARK_* variables
    >>> frame = client.training_frame(entity_df, ["account_spend:amount_sum_24h"])
    >>> client.materialize_incremental(datetime.now(UTC))     # offline -> Redis
    >>> online = client.online_features([{"account_id": 1042}], ["account_spend:amount_sum_24h"])
    >>> online.frame, online.found

``FeatureClient`` talks to Feast with tidemark's offline store plugin (every training value is
point-in-time correct for its entity row) and its packed Redis online store (which serves, for
"now", the value the offline join would return for "now").
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from datetime import datetime
from pathlib import Path
from typing import TYPE_CHECKING, Any, NamedTuple

import pandas as pd

from features.errors import EntityFrameError, UnknownFeatureError
from tidemark.settings import BUNDLED_PROJECT, Settings

if TYPE_CHECKING:
    from feast import FeatureStore
    from pyspark.sql import DataFrame, SparkSession

    from features.materialize import MaterializeResult
    from features.online_reader import OnlineReader, ReadPlan
    from features.push import EventPusher

__all__ = ["FeatureClient", "OnlineFeatures", "repo_objects"]


class OnlineFeatures(NamedTuple):
    """Online features in input order, and per feature view whether a live value was found."""

    frame: pd.DataFrame  # join keys, then one column per requested feature (nullable dtypes)
    found: pd.DataFrame  # one bool column per feature view


class FeatureClient:
    """Training frames (and, later, online features) from tidemark's Feast project."""

    def __init__(self, settings: Settings | None = None, *, repo_path: Path | None = None) -> None:
        """Use ``settings`` (default: from the environment); ``repo_path`` (default
        ``settings.feast_repo``, i.e. ``TIDEMARK_FEAST_REPO``) selects a team's Feast repo (a folder
        with a ``feature_store.yaml``) instead of the bundled example's."""
        self.settings = settings or Settings.from_env()
        self.settings.secure_home()  # a notebook's home is as private as the CLI's (its umask is left alone)
        self._repo_path = repo_path or self.settings.feast_repo
        self._store: FeatureStore | None = None
        self._reader: OnlineReader | None = None
        self._plans: dict[tuple[tuple[str, ...], bool], ReadPlan] = {}  # per reader
        self._pusher: EventPusher | None = None

    @property
    def store(self) -> FeatureStore:
        """The Feast ``FeatureStore`` (created on first use; the repo's definitions applied if the
        registry was behind them)."""
        if self._store is None:
            self._store = self._open_store()
        return self._store

    @property
    def spark(self) -> SparkSession:
        """The Spark session the offline store uses (started on first use)."""
        from features.spark import spark_session

        return spark_session(self.settings.spark)

    def apply(self) -> None:
        """Register the repo's definitions in its Feast registry: a team's repo's Python files (else
        the bundled example's, ``tidemark.settings.BUNDLED_PROJECT``), as ``feast apply`` reads them
        (objects it no longer defines are kept: ``feast apply`` deletes them)."""
        from features.feast_repo import apply_definitions

        apply_definitions(self.store, repo_objects(Path(self._repo_path or BUNDLED_PROJECT), self.settings))
        self._reader = None
        self._pusher = None
        self._plans.clear()

    def feature_references(self) -> list[str]:
        """Every registered ``view:feature`` reference."""
        return sorted(
            f"{fv.name}:{feature.name}"
            for fv in self.feature_views()
            for feature in fv.features
            # Feast's inference lists a stream view's join keys among its features: they are not
            if feature.name not in {c.name for c in fv.entity_columns}
        )

    def feature_views(self) -> list[Any]:
        """Every registered feature view, stream feature views included."""
        views = {fv.name: fv for fv in self.store.list_feature_views()}
        for fv in self.store.list_stream_feature_views():
            views.setdefault(fv.name, fv)
        return [views[name] for name in sorted(views)]

    def feature_view(self, name: str) -> Any:
        """The registered feature view (or stream feature view) called ``name``."""
        from feast.errors import FeatureViewNotFoundException

        try:
            return self.store.get_feature_view(name)
        except FeatureViewNotFoundException:
            return self.store.get_stream_feature_view(name)

    def push(self, push_source: str, rows: pd.DataFrame | Sequence[Mapping[str, Any]] | Mapping[str, Any], *,
             at: datetime | None = None) -> dict[str, Any]:
        """Push events (a DataFrame, dicts, or a dict of columns) to every stream feature view that
        reads ``push_source``, as of ``at`` (default now): each event once per event id, however
        often it is pushed. Returns per view how many events were added, were replays, or had
        already left every window. Raises EventError (nothing stored) for a bad row."""
        from features.online_views import epoch_us

        counts = self.event_pusher().push(push_source, rows, at_us=None if at is None else epoch_us(at))
        return {view: c.as_dict() for view, c in counts.items()}

    def event_pusher(self) -> EventPusher:
        """The push path ``serving/`` and the stream job use (one per client)."""
        if self._pusher is None:
            from features.push import EventPusher

            reader = self.online_reader()
            self._pusher = EventPusher(reader.redis, self.store.project, reader.views.values())
        return self._pusher

    def resolve_features(self, features: str | Sequence[str]) -> tuple[list[str], str | None]:
        """``view:feature`` references for a Feast ``FeatureService`` name or a list of references,
        and the service's name (None for a list). Unknown names raise with near matches."""
        from features.errors import UnknownFeatureServiceError

        if isinstance(features, str) and ":" in features:  # one reference
            features = [features]
        if isinstance(features, str):
            known = {fs.name: fs for fs in self.store.list_feature_services()}
            service = known.get(features)
            if service is None:
                raise UnknownFeatureServiceError(features, known)
            refs = [f"{p.name_to_use()}:{f.name}" for p in service.feature_view_projections for f in p.features]
            self._check_references(refs)
            return refs, features
        refs = list(features)
        self._check_references(refs)
        return refs, None

    def join_keys(self, features: Sequence[str]) -> list[tuple[str, str]]:
        """The entity join keys that ``features`` need, sorted, each with its kind: ``"int"`` or
        ``"str"`` (the entity's value type), as online reads and request rows take them."""
        from features.online_views import DUMMY_JOIN_KEY, OnlineView

        keys: dict[str, str] = {}
        for view in sorted({ref.split(":", 1)[0] for ref in features}):
            online = OnlineView.from_feast(self.feature_view(view))
            keys.update((k, kind) for k, kind in zip(online.join_keys, online.key_kinds, strict=True)
                        if k != DUMMY_JOIN_KEY)
        return sorted(keys.items())

    def lineage(self, features: Sequence[str]) -> dict[str, dict[str, Any]]:
        """Where ``features`` come from, per feature view, as the registry has it now: the Feast
        version (``v<N>``; Feast numbers each schema change), a SHA-256 of the view's definition,
        when it was last applied, its TTL in seconds, its source, and the features used."""
        import hashlib

        features = list(features)
        self._check_references(features)
        used: dict[str, list[str]] = {}
        for ref in features:
            view, name = ref.split(":", 1)
            used.setdefault(view, []).append(name)
        out: dict[str, dict[str, Any]] = {}
        for view, names in sorted(used.items()):
            fv = self.feature_view(view)
            # The active version: a view pinned back to an older one is not at the newest number.
            number = fv.current_version_number
            if number is None:
                versions = [r["version_number"] for r in self.store.list_feature_view_versions(view)]
                number = max(versions) if versions else None
            definition = fv.to_proto().spec.SerializeToString(deterministic=True)
            out[view] = {
                "version": None if number is None else f"v{number}",
                "definition_sha256": hashlib.sha256(definition).hexdigest(),
                "last_updated": fv.last_updated_timestamp.isoformat() if fv.last_updated_timestamp else None,
                "ttl_seconds": int(fv.ttl.total_seconds()) if fv.ttl is not None else None,
                "source": getattr(fv.batch_source, "path", None) or getattr(fv.batch_source, "name", None),
                "features": names,
            }
        return out

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

    def online_features(
        self,
        entities: Sequence[Mapping[str, Any]] | pd.DataFrame,
        features: Sequence[str],
        *,
        full_feature_names: bool = False,
        at: datetime | None = None,
    ) -> OnlineFeatures:
        """Latest online values for ``entities`` (dicts or a DataFrame of join keys).

        Missing entities and values older than their view's TTL come back as nulls with
        ``found`` false, never as an error. One Redis round trip per call (per cluster node).
        ``at`` (default now): the instant TTLs and stream views' windows are judged at, for a
        comparison with the offline store at one instant; the stored state is what it is now.
        """
        reader = self.online_reader()
        plan_key = (tuple(features), full_feature_names)
        plan = self._plans.get(plan_key)
        if plan is None:
            plan = self._plans[plan_key] = reader.plan(list(features), full_feature_names=full_feature_names)
        frame = entities if isinstance(entities, pd.DataFrame) else pd.DataFrame(list(entities))
        from features.online_views import epoch_us

        values, found = reader.read_frame(plan, frame, at_us=None if at is None else epoch_us(at))
        return OnlineFeatures(values, found)

    def online_reader(self) -> OnlineReader:
        """The low-level reader ``serving/`` uses (``plan`` once, then ``read_columns``)."""
        if self._reader is None:
            from features.online_reader import OnlineReader
            from features.online_store import connect
            from features.online_views import OnlineView

            views = {fv.name: OnlineView.from_feast(fv) for fv in self.feature_views()}
            self._reader = OnlineReader(connect(self.store.config.online_store), self.store.project, views)
        return self._reader

    def materialize(self, start: datetime, end: datetime, *, views: Sequence[str] | None = None,
                    progress: bool = True, partitions: int | None = None) -> list[MaterializeResult]:
        """Move the latest value per entity with event time in ``[start, end]`` (and arrived by
        ``end``) from the offline store to Redis. Idempotent; re-run to resume after a crash.

        ``partitions``: Spark tasks per view (default: two per core); the unit of resumption.
        """
        from features.materialize import Window

        return self._materialize(views, lambda fv: Window(start, end), progress, partitions, stream_end=end)

    def materialize_incremental(self, end: datetime, *, views: Sequence[str] | None = None,
                                progress: bool = True, partitions: int | None = None) -> list[MaterializeResult]:
        """Materialize each view from where its last run ended to ``end``, including rows that
        arrived late since then. A view not yet loaded under its current definition and TTL gets
        a full load (from ``end - ttl``); a crashed run is finished first, with its own window."""
        from features.materialize import incremental_window
        from features.online_store import connect

        redis_online = connect(self.store.config.online_store)
        project = self.store.project
        resumed = self._materialize(views, lambda fv: incremental_window(fv, end, redis_online, project),
                                    progress, partitions, only=lambda w: w.end != end)
        rest = self._materialize(views, lambda fv: incremental_window(fv, end, redis_online, project),
                                 progress, partitions, stream_end=end)
        return resumed + rest

    def _materialize(self, names: Sequence[str] | None, window_of: Any, progress: bool,
                     partitions: int | None, only: Any = None, stream_end: datetime | None = None
                     ) -> list[MaterializeResult]:
        from features.materialize import materialize_views
        from features.stream_views import is_stream_view

        store = self.store
        fvs = [self.feature_view(n) for n in names] if names else self.feature_views()
        streams = [fv for fv in fvs if is_stream_view(fv)]
        fvs = [fv for fv in fvs if not is_stream_view(fv)]
        results = [self._backfill(fv, stream_end, progress) for fv in streams] if stream_end else []
        work = [(fv, window_of(fv)) for fv in fvs]
        work = [(fv, w) for fv, w in work if only is None or only(w)]
        if not work:
            return results
        return results + materialize_views(self.spark, store, work, partitions=partitions, progress=progress)

    def _backfill(self, fv: Any, end: datetime, progress: bool) -> MaterializeResult:
        """A stream view's "materialization": its window state rebuilt from the event history."""
        import time

        from features.materialize import MaterializeResult, Window
        from features.online_views import WriteCounts
        from features.push import backfill

        started = time.perf_counter()
        done = backfill(self.spark, fv, self.online_reader().redis, self.store.project, at=end)
        if progress:
            print(f"{fv.name}: window state rebuilt as of {end.isoformat()} from {done.events:,} events "
                  f"({done.counts.added:,} added, {done.counts.duplicates:,} already there) "
                  f"in {time.perf_counter() - started:.1f} s")
        counts = WriteCounts(written=done.counts.added, unchanged=done.counts.duplicates, expired=done.counts.expired)
        return MaterializeResult(fv.name, Window(end, end), counts, partitions=0, resumed_partitions=0)

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
        """The repo's store, configured by its own ``feature_store.yaml`` (tidemark's settings only
        fill what it leaves open: ``features.feast_repo.repo_config``), with the repo's definitions
        applied if the registry does not hold them as they are now (an edited view is applied and
        logged as ``feast plan`` prints it, never served stale); a cheap check when nothing changed."""
        from feast import FeatureStore

        from features.feast_repo import repo_config, sync_definitions

        repo = Path(self._repo_path or BUNDLED_PROJECT)
        config = repo_config(repo, self.settings)
        registry = str(config.registry.path or "")
        if registry and "://" not in registry:  # a local file registry: Feast does not create its folder
            Path(registry).parent.mkdir(parents=True, exist_ok=True)
        store = FeatureStore(repo_path=str(repo), config=config)
        sync_definitions(store, repo_objects(repo, self.settings))
        return store


def repo_objects(repo: Path, settings: Settings | None = None) -> list[Any]:
    """The Feast objects (entities, data sources, feature views, feature services) that the Python
    files of a Feast repo define at module level, each once, as ``feast apply`` collects them; the
    files are loaded by path, without changing the working directory or ``sys.path``. A file that
    defines ``tidemark_definitions(settings)`` gives that function's objects instead (called with
    ``settings``, e.g. so that its data paths follow the client's home rather than the environment)."""
    import hashlib
    import importlib.util

    from feast import Entity, FeatureService
    from feast.base_feature_view import BaseFeatureView
    from feast.data_source import DataSource

    kinds = (Entity, DataSource, BaseFeatureView, FeatureService)
    found: list[Any] = []
    for path in sorted(p for p in repo.rglob("*.py") if p.name != "__init__.py" and ".ipynb_checkpoints" not in p.parts):
        name = f"_tidemark_repo_{hashlib.sha256(str(path.resolve()).encode()).hexdigest()[:12]}_{path.stem}"
        spec = importlib.util.spec_from_file_location(name, path)
        if spec is None or spec.loader is None:
            continue
        module = importlib.util.module_from_spec(spec)
        spec.loader.exec_module(module)
        hook = getattr(module, "tidemark_definitions", None)
        values = hook(settings) if callable(hook) and settings is not None else vars(module).values()
        for value in values:
            if isinstance(value, kinds) and not any(value is seen for seen in found):
                found.append(value)
    return found
