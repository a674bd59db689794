"""Feast online store plugin: one packed value per (project, feature view, entity) in Redis.

Select it in any Feast repo's ``feature_store.yaml``::

    online_store:
      type: features.online_store.PackedRedisOnlineStore
      url: redis://10.0.0.5:6379/0      # omit: tidemark's embedded Redis under $TIDEMARK_HOME

or, as Feast's own ``redis`` store is configured (so a repo switches by its ``type:`` line alone)::

    online_store:
      type: features.online_store.PackedRedisOnlineStore
      connection_string: "10.0.0.5:6379,db=0,ssl=true,password=..."
      redis_type: redis_cluster         # optional, as in Feast; default: ask the server
      key_ttl_seconds: 604800           # optional: a key lives at most this long after its last write

``feast materialize``, ``feast materialize-incremental`` and ``FeatureStore.get_online_features``
work unchanged. Writes are newest-wins (an older event never replaces a newer one); reads return
a value older than the view's TTL as missing, as the offline point-in-time join would. The key and
value formats are in ``docs/online_format.md``.
"""

from __future__ import annotations

import logging
import threading
from collections.abc import Callable, Sequence
from datetime import UTC, datetime
from pathlib import Path
from typing import Any, Final, Literal

import numpy as np
from feast.entity import Entity
from feast.feature_view import FeatureView
from feast.field import Field as FeastField
from feast.infra.online_stores.online_store import OnlineStore
from feast.protos.feast.types.EntityKey_pb2 import EntityKey as EntityKeyProto
from feast.protos.feast.types.Value_pb2 import Value as ValueProto
from feast.repo_config import FeastConfigBaseModel, RepoConfig
from feast.types import from_value_type
from feast.value_type import ValueType
from pydantic import Field, NonNegativeInt, PositiveInt, StrictStr, model_validator

from features.errors import ConfigError, UnresolvedEntityError
from features.online_keys import entity_id_from_proto, key_prefix, view_keys
from features.online_views import LOADED_KEY, OnlineView, epoch_us, now_us, raise_if_refused, read_batch, write_rows
from features.packed_layout import NO_TIME, VALUE_KIND_PREFIX
from features.redis_async import close_async_clients, get_many_async
from features.redis_client import RedisOnline
from features.redis_connection_string import redis_url_from_connection_string
from features.value_protos import serialized_column
from features.window_state import state_header
from tidemark.settings import Settings

__all__ = ["PackedRedisOnlineStore", "PackedRedisOnlineStoreConfig", "connect", "redis_url_for"]

log = logging.getLogger(__name__)

_SCHEMAS_KEY: Final = b"__tidemark_schemas__"
_PROTO_FIELD: Final = {"float64": "double_val", "float32": "float_val", "int64": "int64_val",
                       "int32": "int32_val", "bool": "bool_val", "string": "string_val",
                       "bytes": "bytes_val"}


class PackedRedisOnlineStoreConfig(FeastConfigBaseModel):
    """Settings of :class:`PackedRedisOnlineStore`; unknown keys are rejected.

    Feast's own ``redis`` store's keys are accepted as they are (``connection_string``,
    ``redis_type``, ``key_ttl_seconds``), so a Feast repo switches to this store by its ``type:``
    line alone.
    """

    type: Literal["features.online_store.PackedRedisOnlineStore"] = "features.online_store.PackedRedisOnlineStore"

    url: StrictStr | None = Field(default=None, repr=False)  # may hold a password: kept out of reprs
    """``redis://host:port/db`` (any node of a cluster will do). Unset, and no ``connection_string``:
    ``TIDEMARK_REDIS_URL``, else the embedded server tidemark starts under ``$TIDEMARK_HOME/redis``."""

    connection_string: StrictStr | None = Field(default=None, repr=False)
    """Feast's form of the address, instead of ``url``: ``host:port[,host:port…][,db=0][,ssl=true]
    [,password=…][,username=…]`` (the first server is used; on a cluster it finds the others). See
    :mod:`features.redis_connection_string` for the options it carries."""

    embedded_dir: StrictStr | None = None
    """Where the embedded server keeps its data when neither ``url`` nor ``connection_string`` is
    set (default: ``$TIDEMARK_HOME/redis``)."""

    redis_type: Literal["auto", "redis", "redis_cluster", "redis_sentinel"] = "auto"
    """``auto`` asks the server whether it is a cluster node; ``redis`` and ``redis_cluster`` (Feast's
    values) say so. ``redis_sentinel`` is refused with what to do instead."""

    key_ttl_seconds: PositiveInt | None = None
    """Feast's key: a key expires in Redis at most this long after it was last written (seconds).
    It only shortens a key's life: a view with a TTL still expires ``expiry_margin_s`` after the TTL
    if that comes first, and reads still return a value older than the view's TTL as missing. A view
    without a TTL, whose keys otherwise never expire, is forgotten this long after its last write."""

    timeout_ms: PositiveInt = 50
    """A read that takes longer fails with ``OnlineStoreUnavailable`` (milliseconds)."""

    write_timeout_ms: PositiveInt = 10_000
    """Bound on one pipelined write or scan (milliseconds)."""

    expiry_margin_s: NonNegativeInt = 3600
    """Keys expire in Redis this long after their view's TTL; reads apply the TTL exactly."""

    @model_validator(mode="after")
    def _one_address(self) -> PackedRedisOnlineStoreConfig:
        """Two addresses would leave the reader guessing which one is used: refuse them."""
        if self.url is not None and self.connection_string is not None:
            raise ConfigError("online_store sets both url and connection_string: keep one (url as "
                              "redis://host:port/db, or connection_string in Feast's 'host:port,db=0' form)")
        if self.redis_type == "redis_sentinel":
            raise ConfigError("redis_type: redis_sentinel is not supported by tidemark's online store: "
                              "point url (or connection_string) at the current master, or use Redis Cluster")
        if self.connection_string is not None:
            redis_url_from_connection_string(self.connection_string)  # a bad string fails on load
        return self

    @property
    def key_ttl_ms(self) -> int:
        """``key_ttl_seconds`` in milliseconds; 0 when unset (no cap)."""
        return 0 if self.key_ttl_seconds is None else self.key_ttl_seconds * 1000


_connections: dict[tuple[Any, ...], RedisOnline] = {}
_connections_lock = threading.Lock()


def redis_url_for(settings: Settings) -> str:
    """``TIDEMARK_REDIS_URL`` if set, else the URL of the embedded server (started if needed)."""
    if settings.redis_url:
        return settings.redis_url
    from features.embedded_redis import EmbeddedRedis

    return EmbeddedRedis(settings.redis_dir).ensure_running()


def connect(config: PackedRedisOnlineStoreConfig) -> RedisOnline:
    """The shared connection for ``config`` (one pool per configuration in a process).

    The embedded server is located (and started if needed) once, on the first call: afterwards a
    stopped server is an ``OnlineStoreUnavailable`` like any other, not restarted behind a read.
    """
    cluster = None if config.redis_type == "auto" else config.redis_type == "redis_cluster"
    key = (config.url, config.connection_string, config.embedded_dir, cluster, config.timeout_ms,
           config.write_timeout_ms)
    found = _connections.get(key)
    if found is not None:
        return found
    with _connections_lock:
        if key not in _connections:
            _connections[key] = RedisOnline(_resolve_url(config), timeout_ms=config.timeout_ms,
                                            write_timeout_ms=config.write_timeout_ms, cluster=cluster)
        return _connections[key]


def _resolve_url(config: PackedRedisOnlineStoreConfig) -> str:
    if config.url:
        return config.url
    if config.connection_string:
        return redis_url_from_connection_string(config.connection_string)
    if config.embedded_dir:
        from features.embedded_redis import EmbeddedRedis

        return EmbeddedRedis(Path(config.embedded_dir)).ensure_running()
    return redis_url_for(Settings.from_env())


class PackedRedisOnlineStore(OnlineStore):
    """Feast ``OnlineStore`` keeping each view's features for an entity in one packed Redis value."""

    def online_write_batch(
        self,
        config: RepoConfig,
        table: FeatureView,
        data: list[tuple[EntityKeyProto, dict[str, ValueProto], datetime, datetime | None]],
        progress: Callable[[int], Any] | None,
    ) -> None:
        """Write Feast rows (protos) for one view, newest wins."""
        view = OnlineView.from_feast(table)
        if view.stream is not None:
            raise ConfigError(
                f"{view.name} is a stream feature view: its online state is built from events, not from "
                "aggregated rows. Push events (FeatureClient.push, POST /v1/push) and backfill it with "
                "`tidemark features materialize`")
        store_config: PackedRedisOnlineStoreConfig = config.online_store
        ids = [entity_id_from_proto(row[0]) for row in data]
        event = np.array([epoch_us(row[2]) for row in data], dtype=np.int64)
        created = np.array([NO_TIME if row[3] is None else epoch_us(row[3]) for row in data], dtype=np.int64)
        columns, valid = _columns_from_protos(view, [row[1] for row in data])
        counts = write_rows(connect(store_config), key_prefix(config.project), view, ids, event, created,
                            columns, valid, margin_us=store_config.expiry_margin_s * 1_000_000,
                            key_ttl_ms=store_config.key_ttl_ms)
        log.debug("%s: %s", view.name, counts)
        if progress is not None:
            progress(len(data))
        raise_if_refused(counts)

    def online_read(
        self,
        config: RepoConfig,
        table: FeatureView,
        entity_keys: list[EntityKeyProto],
        requested_features: list[str] | None = None,
    ) -> list[tuple[datetime | None, dict[str, ValueProto] | None]]:
        """Feature protos per entity key; ``(None, None)`` for a missing, stale or corrupt value."""
        view, keys = _view_and_keys(config, table, entity_keys)
        return _feast_rows(view, keys, connect(config.online_store).get_many(keys), requested_features)

    async def online_read_async(
        self,
        config: RepoConfig,
        table: FeatureView,
        entity_keys: list[EntityKeyProto],
        requested_features: list[str] | None = None,
    ) -> list[tuple[datetime | None, dict[str, ValueProto] | None]]:
        """What :meth:`online_read` returns, read on redis-py's asyncio client: Feast's feature
        server and ``get_online_features_async`` await this, and a blocking read would stall
        every request in flight on the event loop."""
        view, keys = _view_and_keys(config, table, entity_keys)
        values = await get_many_async(connect(config.online_store), keys)
        return _feast_rows(view, keys, values, requested_features)

    async def initialize(self, config: RepoConfig) -> None:
        """Nothing to open ahead: the asyncio client connects on the first read in each event loop
        (a connection cannot move between loops)."""

    async def close(self) -> None:
        """Close the asyncio connections of the running event loop (Feast's feature server calls
        this on shutdown)."""
        await close_async_clients()

    def update(
        self,
        config: RepoConfig,
        tables_to_delete: Sequence[FeatureView],
        tables_to_keep: Sequence[FeatureView],
        entities_to_delete: Sequence[Entity],
        entities_to_keep: Sequence[Entity],
        partial: bool,
    ) -> None:
        """Drop deleted views' keys, and the keys of views whose definition changed (their stored
        values no longer match; materialize again)."""
        redis_online = connect(config.online_store)
        project = key_prefix(config.project)
        schemas_key = project + _SCHEMAS_KEY
        writer: Any = redis_online.writer  # redis-py's stubs want str keys; ours are bytes
        resolve = _EntityResolver(config, entities_to_keep)
        with redis_online.translated("update"):
            for table in tables_to_delete:
                _delete_view(redis_online, project, table.name)
                writer.hdel(schemas_key, table.name)
            for table in tables_to_keep:
                try:
                    fingerprint = _fingerprint(OnlineView.from_feast(resolve(table)))
                except UnresolvedEntityError as exc:
                    # Feast's own stores accept the view (its values are keyed at write time);
                    # nothing can be stored under it before its entity is applied, and writing
                    # then says so, so the apply goes on for the rest of the repo
                    log.warning("%s; its online values can be written once they are", exc)
                    continue
                stored = writer.hget(schemas_key, table.name)
                if stored is not None and stored != fingerprint:
                    deleted = _delete_view(redis_online, project, table.name)
                    # materialize_incremental reloads it in full (not only since its last run)
                    log.warning("feature view %s changed definition: deleted its %d online values; "
                                "materialize it again", table.name, deleted)
                writer.hset(schemas_key, table.name, fingerprint)

    def teardown(self, config: RepoConfig, tables: Sequence[FeatureView], entities: Sequence[Entity]) -> None:
        """Delete every online value of ``tables``."""
        redis_online = connect(config.online_store)
        project = key_prefix(config.project)
        writer: Any = redis_online.writer
        with redis_online.translated("teardown"):
            for table in tables:
                _delete_view(redis_online, project, table.name)
                writer.hdel(project + _SCHEMAS_KEY, table.name)


class _EntityResolver:
    """Fills in the entity columns of a view whose entities were applied in an earlier call.

    ``FeatureStore.apply`` and ``feast apply`` (Feast 0.67) infer a view's entity columns before
    calling ``update``, from this call's entities and the registry's. A caller that hands
    ``update`` the views as defined (the provider's ``update_infra`` called directly, an operator
    syncing infrastructure) passes none: rather than refuse, take each join key and its type from
    the typed entities of this call, else of the registry (opened once, and only then).
    """

    def __init__(self, config: RepoConfig, entities: Sequence[Entity]) -> None:
        self._config = config
        self._known: dict[str, Entity] = {}
        self._learn(entities)
        self._registry_read = False

    def __call__(self, view: FeatureView) -> FeatureView:
        names = list(view.entities)
        if view.entity_columns or names in ([], ["__dummy"]):
            return view
        if not self._registry_read and any(n not in self._known for n in names):
            self._read_registry()
        columns = []
        for name in names:
            entity = self._known.get(name)
            if entity is None:
                return view  # OnlineView.from_feast says what is missing
            columns.append(FeastField(name=entity.join_key, dtype=from_value_type(entity.value_type)))
        resolved = view.__copy__()
        resolved.entity_columns = columns
        return resolved

    def _read_registry(self) -> None:
        from feast import FeatureStore  # the registry type (file, SQL, remote) as the config says

        self._registry_read = True
        self._learn(FeatureStore(config=self._config).registry.list_entities(self._config.project))

    def _learn(self, entities: Sequence[Entity]) -> None:
        """Keep the typed entities: an untyped one cannot give its join key a type."""
        for entity in entities:
            if entity.value_type != ValueType.UNKNOWN:
                self._known.setdefault(entity.name, entity)


def _fingerprint(view: OnlineView) -> bytes:
    """What must not change under stored values: the packed schema, and a stream view's state
    layout and windows (state kept under other windows would be dropped at another horizon)."""
    text = str(view.schema.fingerprint)
    if view.stream is not None:
        text += f":{state_header(view.stream).hex()}:{view.stream.horizon_us}"
    return text.encode()


def _delete_view(redis_online: RedisOnline, project: bytes, view: str) -> int:
    """Delete a view's values, and its "fully loaded" mark so the next incremental run reloads it."""
    escaped = "".join("\\" + c if c in "*?[]\\" else c for c in view)
    writer: Any = redis_online.writer
    writer.hdel(project + LOADED_KEY, view)
    return redis_online.delete_matching(project + b"{*}:" + escaped.encode())


def _view_and_keys(config: RepoConfig, table: FeatureView, entity_keys: list[EntityKeyProto]
                   ) -> tuple[OnlineView, list[bytes]]:
    """The view as the store sees it, and the Redis keys of ``entity_keys`` under it."""
    view = OnlineView.from_feast(table)
    return view, view_keys(key_prefix(config.project), view.name, [entity_id_from_proto(k) for k in entity_keys])


def _feast_rows(view: OnlineView, keys: list[bytes], values: Sequence[Any], requested: list[str] | None
                ) -> list[tuple[datetime | None, dict[str, ValueProto] | None]]:
    """Values read from Redis as Feast's rows, decoded as of now (TTL applied, newest stored wins):
    one decoding for the sync and the async read."""
    batch = read_batch(view, values, keys, now_us())
    live = batch.found
    wanted = [i for i, n in enumerate(view.schema.names) if requested is None or n in requested]
    columns = batch.columns
    out: list[tuple[datetime | None, dict[str, ValueProto] | None]] = []
    for row in range(len(keys)):
        if not live[row]:
            out.append((None, None))
            continue
        row_values = {view.schema.names[i]: _proto(view.schema.kinds[i], columns[i][row],
                                                   bool(batch.valid[row, i])) for i in wanted}
        out.append((datetime.fromtimestamp(int(batch.event_us[row]) / 1e6, tz=UTC), row_values))
    return out


def _columns_from_protos(view: OnlineView, rows: list[dict[str, ValueProto]]
                         ) -> tuple[list[np.ndarray], list[np.ndarray]]:
    columns, valid = [], []
    for name, kind in zip(view.schema.names, view.schema.kinds, strict=True):
        if kind.startswith(VALUE_KIND_PREFIX):  # stored as the proto itself, byte for byte
            column, ok = serialized_column([row.get(name) for row in rows])
            columns.append(column)
            valid.append(ok)
            continue
        values = []
        for row in rows:
            proto = row.get(name)
            which = None if proto is None else proto.WhichOneof("val")
            values.append(None if which is None or which == "null_val" else getattr(proto, which))
        ok = np.array([v is not None for v in values], dtype=bool)
        if kind in ("string", "bytes"):
            columns.append(np.array(values, dtype=object))
        else:
            dtype = np.float64 if kind.startswith("float") else np.int64
            columns.append(np.array([0 if v is None else v for v in values], dtype=dtype))
        valid.append(ok)
    return columns, valid


def _proto(kind: str, value: Any, ok: bool) -> ValueProto:
    if not ok:
        return ValueProto()
    if kind.startswith(VALUE_KIND_PREFIX):
        return value  # type: ignore[no-any-return]  # parsed by read_batch: the proto as written
    if kind == "bool":
        value = bool(value)
    elif kind in ("int64", "int32"):
        value = int(value)
    elif kind.startswith("float"):
        value = float(value)
    return ValueProto(**{_PROTO_FIELD[kind]: value})
