"""The fast online read path: entity keys in, a float32 matrix (or a DataFrame) out.

One MGET per call on a single Redis (one pipelined round trip per node on a cluster) for every
requested view of every entity, and one vectorised decode per view. ``serving/`` holds a
:class:`ReadPlan` per model and calls :meth:`OnlineReader.read_columns` (numpy columns, text
included); :meth:`OnlineReader.read_matrix` gives one float32 matrix of numeric features; notebooks
use ``FeatureClient.online_features``, which calls :meth:`OnlineReader.read_frame`.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from functools import cached_property
from typing import Any

import numpy as np
import pandas as pd

from features.errors import ConfigError, MissingColumnError, UnknownFeatureError
from features.online_keys import entity_ids, key_prefix
from features.online_views import DUMMY_JOIN_KEY, OnlineView, now_us, read_batch
from features.packed_layout import VALUE_KIND_PREFIX, UnpackedBatch, is_variable
from features.redis_client import RedisOnline

__all__ = ["OnlineMatrix", "OnlineReader", "ReadPlan"]


@dataclass(frozen=True)
class ReadPlan:
    """Resolved feature references: which views to read and where each feature lands."""

    views: tuple[OnlineView, ...]
    columns: tuple[tuple[int, int], ...]  # per output column: (view index, feature index)
    names: tuple[str, ...]                # output column names
    join_keys: tuple[str, ...]            # every join key the views need, sorted

    @cached_property
    def by_view(self) -> tuple[tuple[list[int], list[int]], ...]:
        """Per view: (its feature indices, their output columns)."""
        out: list[tuple[list[int], list[int]]] = [([], []) for _ in self.views]
        for c, (v, f) in enumerate(self.columns):
            out[v][0].append(f)
            out[v][1].append(c)
        return tuple(out)

    @cached_property
    def split_by_view(self) -> tuple[tuple[np.ndarray, tuple[str, ...], tuple[tuple[int, str], ...]], ...]:
        """Per view: its numeric features' indices (intp) and output names, and its other
        features as (index, output name)."""
        out = []
        for v, (features, columns) in enumerate(self.by_view):
            kinds = self.views[v].schema.kinds
            numeric = [(f, self.names[c]) for f, c in zip(features, columns, strict=True) if not is_variable(kinds[f])]
            other = tuple((f, self.names[c]) for f, c in zip(features, columns, strict=True) if is_variable(kinds[f]))
            out.append((np.array([f for f, _ in numeric], dtype=np.intp), tuple(n for _, n in numeric), other))
        return tuple(out)

    @cached_property
    def numeric(self) -> bool:
        return not any(is_variable(self.views[v].schema.kinds[f]) for v, f in self.columns)


@dataclass(frozen=True)
class OnlineMatrix:
    """Features as float32 in plan order (NaN where missing), and which views were found."""

    values: np.ndarray  # float32[n, features]
    found: np.ndarray   # bool[n, views]: a value exists and is within the view's TTL


class OnlineReader:
    """Reads packed online values of one Feast project."""

    def __init__(self, redis_online: RedisOnline, project: str, views: Mapping[str, OnlineView]) -> None:
        self._redis = redis_online
        self._project = key_prefix(project)
        self._views = dict(views)

    @property
    def views(self) -> Mapping[str, OnlineView]:
        """The views this reader knows, by name."""
        return self._views

    @property
    def redis(self) -> RedisOnline:
        """The connection this reader uses (serving pings it for readiness)."""
        return self._redis

    def plan(self, features: Sequence[str], *, full_feature_names: bool = False) -> ReadPlan:
        """Resolve ``view:feature`` references (in this order) once; raises UnknownFeatureError."""
        known = [f"{v.name}:{n}" for v in self._views.values() for n in v.schema.names]
        order: dict[str, int] = {}
        columns, names = [], []
        for ref in features:
            view_name, _, feature = ref.partition(":")
            view = self._views.get(view_name)
            if view is None or feature not in view.schema.names:
                raise UnknownFeatureError(ref, known)
            index = order.setdefault(view_name, len(order))
            columns.append((index, view.schema.names.index(feature)))
            names.append(f"{view_name}__{feature}" if full_feature_names else feature)
        if not columns:
            raise UnknownFeatureError("", known)
        if len(set(names)) != len(names):
            raise ConfigError("two requested features share a name; pass full_feature_names=True")
        views = tuple(self._views[name] for name in order)
        join_keys = tuple(sorted({k for v in views for k in v.join_keys if k != DUMMY_JOIN_KEY}))
        return ReadPlan(views, tuple(columns), tuple(names), join_keys)

    def read_matrix(self, plan: ReadPlan, entities: Mapping[str, Any] | pd.DataFrame) -> OnlineMatrix:
        """Numeric features of ``plan`` for each entity, as float32, in input order."""
        if not plan.numeric:
            text = [plan.names[i] for i, (v, f) in enumerate(plan.columns)
                    if is_variable(plan.views[v].schema.kinds[f])]
            raise ConfigError(f"features {text} are not numbers (text, bytes, lists, maps, ...); read them "
                              "with read_columns or read_frame, or encode them as numbers in the feature view")
        batches, n = self._read(plan, entities)
        out = np.empty((n, len(plan.columns)), dtype=np.float32)
        for batch, (features, columns) in zip(batches, plan.by_view, strict=True):
            out[:, columns] = batch.floats(features)
        return OnlineMatrix(out, _found(plan, batches, n))

    def read_columns(self, plan: ReadPlan, entities: Mapping[str, Any] | pd.DataFrame, *,
                     at_us: int | np.ndarray | None = None) -> tuple[dict[str, np.ndarray], np.ndarray]:
        """Features of ``plan`` as plain numpy columns in plan order, rows in input order: numbers
        (ints and bools too) as float64 with NaN where missing; text, bytes and every other Feast type
        (lists, maps, JSON, structs, timestamps, ...) as objects holding what Feast's
        ``get_online_features(...).to_dict()`` gives, None where missing; and ``found`` (bool[n, views]). The serving path: no pandas on the way.
        ``at_us``: the instant (or one per row) TTLs and windows are judged at; default now."""
        batches, n = self._read(plan, entities, at_us)
        out: dict[str, np.ndarray] = {}
        for v, (batch, (numeric, names, other)) in enumerate(zip(batches, plan.split_by_view, strict=True)):
            if names:
                block = batch.floats(numeric)
                for j, name in enumerate(names):
                    out[name] = block[:, j]
            kinds = plan.views[v].schema.kinds
            for f, name in other:
                out[name] = _objects(kinds[f], batch.column(f))
        return {name: out[name] for name in plan.names}, _found(plan, batches, n)

    def read_frame(self, plan: ReadPlan, entities: Mapping[str, Any] | pd.DataFrame, *,
                   at_us: int | np.ndarray | None = None) -> tuple[pd.DataFrame, pd.DataFrame]:
        """Join keys then features (nullable dtypes), in input order; and the found mask per view.
        ``at_us`` (µs since the epoch, default now): the instant TTLs and windows are judged at,
        so that a check can compare with the offline store at exactly that instant."""
        batches, n = self._read(plan, entities, at_us)
        data: dict[str, Any] = {k: _column(entities, k) for k in plan.join_keys}
        for name, (v, f) in zip(plan.names, plan.columns, strict=True):
            view = plan.views[v]
            data[name] = _feature_series(view.schema.kinds[f], batches[v], f)
        frame = pd.DataFrame(data, index=pd.RangeIndex(n))
        found = pd.DataFrame(_found(plan, batches, n), columns=[v.name for v in plan.views])
        return frame, found

    def _read(self, plan: ReadPlan, entities: Mapping[str, Any] | pd.DataFrame, at_us: int | np.ndarray | None = None
              ) -> tuple[list[UnpackedBatch], int]:
        n = _length(entities, plan.join_keys)
        keys: list[bytes] = []
        spans = []
        ids_for: dict[tuple[tuple[str, ...], tuple[str, ...]], list[bytes]] = {}
        for view in plan.views:
            signature = (view.join_keys, view.key_kinds)
            if signature not in ids_for:  # views of one entity share the ids
                ids_for[signature] = (
                    entity_ids(view.join_keys, view.key_kinds, [_column(entities, k) for k in view.join_keys])
                    if view.join_keys != (DUMMY_JOIN_KEY,) else [DUMMY_JOIN_KEY.encode() + b"="] * n)
            ids = ids_for[signature]
            head, tail = self._project + b"{", b"}:" + view.name.encode()
            spans.append((len(keys), len(keys) + n))
            keys += [head + e + tail for e in ids]
        values = self._redis.get_many(keys)
        at = now_us() if at_us is None else at_us
        batches = [read_batch(view, values[lo:hi], keys[lo:hi], at)
                   for view, (lo, hi) in zip(plan.views, spans, strict=True)]
        return batches, n


def _found(plan: ReadPlan, batches: list[UnpackedBatch], n: int) -> np.ndarray:
    found = np.empty((n, len(plan.views)), dtype=bool)
    for v, batch in enumerate(batches):
        found[:, v] = batch.found
    return found


def _objects(kind: str, column: np.ndarray) -> np.ndarray:
    """A text/bytes column as is; a ``value:`` column (parsed protos) as Python values."""
    if not kind.startswith(VALUE_KIND_PREFIX):
        return column
    from features.value_protos import python_column  # imports Feast: only for such features

    return python_column(column, kind)


def _feature_series(kind: str, batch: UnpackedBatch, f: int) -> pd.Series:
    column, missing = batch.column(f), ~batch.valid[:, f]
    if kind.startswith(VALUE_KIND_PREFIX):
        return pd.Series(_objects(kind, column), dtype=object)
    if kind == "string":
        return pd.Series(pd.array(column, dtype="string"))
    if kind == "bytes":
        return pd.Series(column, dtype=object)
    if kind == "bool":
        return pd.Series(pd.arrays.BooleanArray(column.astype(bool), missing))
    if kind.startswith("float"):  # a stored NaN reads as missing, as in Feast
        values = column.astype(np.float32 if kind == "float32" else np.float64)
        return pd.Series(pd.arrays.FloatingArray(values, missing | np.isnan(values)))
    return pd.Series(pd.arrays.IntegerArray(column.astype(np.int32 if kind == "int32" else np.int64), missing))


def _length(entities: Mapping[str, Any] | pd.DataFrame, join_keys: Sequence[str]) -> int:
    lengths = {len(_column(entities, k)) for k in join_keys}
    if len(lengths) > 1:
        raise MissingColumnError(f"join key columns have different lengths {sorted(lengths)}")
    return lengths.pop() if lengths else 1


def _column(entities: Mapping[str, Any] | pd.DataFrame, key: str) -> Any:
    try:
        column = entities[key]
    except KeyError:
        have = list(entities.columns if isinstance(entities, pd.DataFrame) else entities.keys())
        raise MissingColumnError(f"the entities have no join key {key!r} (they have {have}); "
                                 "pass one value per entity for every join key of the requested views") from None
    if isinstance(column, pd.Series):
        return column.to_numpy()
    return column if isinstance(column, np.ndarray | list) else [column]
