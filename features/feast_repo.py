"""A Feast repo as ``FeatureClient`` opens it: its own ``feature_store.yaml``, and its definitions
kept in step with the registry.

One source of truth for configuration: the repo's ``feature_store.yaml``, read as ``feast`` reads
it, with only what tidemark's settings must decide put on top (see :func:`repo_config`). The
SDK, the ``tidemark`` CLI and ``feast -c REPO ...`` then run the same stores and engine.

Never a stale definition: on open, :func:`sync_definitions` compares the repo's definitions with
the registry and applies them when they differ, logging the change as ``feast plan`` prints it.
The comparison must be cheap (a notebook, a DAG task and every serving process open a client),
so it is done on a fingerprint: SHA-256 of the definitions as written (their protos before
Feast's inference), recorded as a tag of the registry's Feast ``Project`` in the same commit as
the apply. Equal fingerprints: nothing to do (no Spark, no inference). Different or missing:
``FeatureStore.plan`` (which may infer schemas on Spark) says what changed, then apply.
"""

from __future__ import annotations

import hashlib
import logging
import os
import re
import warnings
from collections.abc import Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

from features.errors import ConfigError

if TYPE_CHECKING:
    from feast import FeatureStore
    from feast.repo_config import RepoConfig

    from tidemark.settings import Settings

__all__ = ["FINGERPRINT_TAG", "apply_definitions", "definitions_fingerprint", "recorded_fingerprint", "repo_config",
           "sync_definitions"]

log = logging.getLogger(__name__)

# Feast warns on every SparkSource it builds, each registry read included: a line per source and
# read, every second in a serving process that follows its registry. tidemark's offline store is
# built on that API and pins Feast; the warning says nothing a user can act on.
warnings.filterwarnings("ignore", message="The spark data source API is an experimental feature",
                        category=RuntimeWarning)

FINGERPRINT_TAG = "tidemark.definitions_sha256"
_HOME_VARIABLE = re.compile(r"\$\{TIDEMARK_HOME\}|\$TIDEMARK_HOME\b")
_PACKED_STORE = "features.online_store.PackedRedisOnlineStore"
_ASOF_STORE = "features.offline_store.SparkAsofOfflineStore"


def repo_config(repo: Path, settings: Settings) -> RepoConfig:
    """The repo's ``feature_store.yaml`` as Feast's ``load_repo_config`` reads it (environment
    variables expanded), except that ``$TIDEMARK_HOME`` is ``settings.home`` (a client opened with
    explicit settings keeps its state there, whatever the environment says), and with tidemark's
    settings filling what the file leaves open:

    * the packed online store without ``url``: ``settings.redis_url`` if set, else the embedded
      server under ``settings.redis_dir``; ``timeout_ms`` from the settings when the file has none;
    * tidemark's offline store without ``spark_conf``: the settings' Spark session options.

    What the file sets wins: it is the source of truth ``feast`` itself reads.
    """
    import yaml
    from feast.repo_config import FeastConfigError, RepoConfig
    from pydantic import ValidationError

    path = repo / "feature_store.yaml"
    if not path.is_file():
        raise ConfigError(f"{repo} has no feature_store.yaml; point TIDEMARK_FEAST_REPO (or repo_path) "
                          "at a Feast repo folder")
    text = _HOME_VARIABLE.sub(lambda _m: str(settings.home), path.read_text())
    raw = yaml.safe_load(os.path.expandvars(text)) or {}
    _fill_online(raw, settings)
    _fill_offline(raw, settings)
    try:
        config = RepoConfig(**raw)
    except ValidationError as exc:
        raise FeastConfigError(exc, path) from exc
    config.repo_path = repo
    return config


def _fill_online(raw: dict[str, Any], settings: Settings) -> None:
    online = raw.get("online_store")
    if not isinstance(online, dict) or online.get("type") != _PACKED_STORE:
        return
    if not online.get("url"):
        if settings.redis_url:
            online["url"] = settings.redis_url
        else:
            online.setdefault("embedded_dir", str(settings.redis_dir))
    online.setdefault("timeout_ms", settings.online_timeout_ms)


def _fill_offline(raw: dict[str, Any], settings: Settings) -> None:
    from features.spark import settings_conf

    offline = raw.get("offline_store")
    if isinstance(offline, dict) and offline.get("type") == _ASOF_STORE and not offline.get("spark_conf"):
        # Spark starts on the offline store's first use (never for online reads), with these settings
        offline["spark_conf"] = settings_conf(settings.spark)


def definitions_fingerprint(objects: Sequence[Any]) -> str:
    """SHA-256 over the objects' protos as written (before Feast's inference fills them in, and
    without their creation times), in a stable order; a Project (it carries the tag) is left out."""
    from feast.project import Project

    parts = []
    for obj in objects:
        if isinstance(obj, Project):
            continue
        proto = obj.to_proto()
        _clear_meta(proto)
        _sort_features(proto)
        parts.append((type(obj).__name__, obj.name, proto.SerializeToString(deterministic=True)))
    digest = hashlib.sha256()
    for kind, name, data in sorted(parts):
        digest.update(f"{kind}\0{name}\0{len(data)}\0".encode())
        digest.update(data)
    return digest.hexdigest()


def _sort_features(proto: Any) -> None:
    """A view's features in name order: Feast writes a stream feature view's from a set
    (``FeatureView.schema``), so their order changes from one process to the next."""
    spec = getattr(proto, "spec", None)
    if spec is None or "features" not in spec.DESCRIPTOR.fields_by_name:
        return
    ordered = sorted(spec.features, key=lambda feature: feature.SerializeToString(deterministic=True))
    copies = [type(feature)() for feature in ordered]
    for copy, feature in zip(copies, ordered, strict=True):
        copy.CopyFrom(feature)
    del spec.features[:]
    spec.features.extend(copies)


def _clear_meta(message: Any) -> None:
    """Drop every ``meta`` (creation and update times, set when an object is built, so different
    on each load of the same definitions) from ``message`` and the messages inside it."""
    for descriptor, value in list(message.ListFields()):
        if descriptor.name == "meta":
            message.ClearField(descriptor.name)
        elif descriptor.message_type is None or descriptor.message_type.GetOptions().map_entry:
            continue
        elif hasattr(value, "ListFields"):  # one message
            _clear_meta(value)
        else:  # a repeated field of messages
            for item in value:
                _clear_meta(item)


def recorded_fingerprint(store: FeatureStore) -> str | None:
    """The fingerprint of the definitions last applied through tidemark, from the registry."""
    from feast.errors import ProjectObjectNotFoundException

    try:
        project = store.registry.get_project(store.project, allow_cache=True)
    except ProjectObjectNotFoundException:
        return None
    return project.tags.get(FINGERPRINT_TAG)


def apply_definitions(store: FeatureStore, objects: Sequence[Any], fingerprint: str | None = None) -> None:
    """``store.apply(objects)`` with the definitions' fingerprint tagged on the project, in one
    commit. Objects the registry has and ``objects`` lack are kept (``feast apply`` deletes them).
    ``fingerprint``: taken before a plan, whose inference fills the objects in (default: now)."""
    from feast.project import Project

    fingerprint = fingerprint or definitions_fingerprint(objects)
    own = [o for o in objects if isinstance(o, Project) and o.name == store.project]
    project = own[0] if own else Project(name=store.project)
    project.tags = {**project.tags, FINGERPRINT_TAG: fingerprint}
    store.apply([o for o in objects if not isinstance(o, Project)] + [project])


def sync_definitions(store: FeatureStore, objects: Sequence[Any]) -> str | None:
    """Apply ``objects`` when they differ from what the registry holds (see the module doc).
    Returns the plan's text (as ``feast plan`` prints it) when something was applied, else None."""
    fingerprint = definitions_fingerprint(objects)
    if recorded_fingerprint(store) == fingerprint:
        return None
    diff = _meaningful(store.plan(_contents(objects))[0])
    text = _plain(diff.to_string())
    if not diff.feast_object_diffs:
        # The registry holds these definitions (applied by `feast apply`, which records no
        # fingerprint): record it and touch nothing else. Applying the objects again would run the
        # online store's update() for every view, for no change.
        apply_definitions(store, [p for p in objects if _is_project(p)], fingerprint)
        return None
    log.warning("the registry of project %s is behind its repo's definitions; applying:\n%s", store.project, text)
    apply_definitions(store, objects, fingerprint)
    return text


def _is_project(obj: Any) -> bool:
    from feast.project import Project

    return isinstance(obj, Project)


def _meaningful(diff: Any) -> Any:
    """The plan's creations and updates, without what is not a change of definition: an embedded
    source's ``meta`` (its timestamps differ for every freshly built object) and the project
    object (it carries the fingerprint; objects the repo no longer defines are kept, not deleted)."""
    from feast.diff.property_diff import TransitionType
    from feast.diff.registry_diff import RegistryDiff

    kept = RegistryDiff()
    for change in diff.feast_object_diffs:
        if change.transition_type not in (TransitionType.CREATE, TransitionType.UPDATE):
            continue
        if type(change.new_feast_object).__name__ == "Project":
            continue
        if change.transition_type == TransitionType.UPDATE:
            change.feast_object_property_diffs = [
                p for p in change.feast_object_property_diffs
                if not (_only_meta(p.val_existing, p.val_declared) or _only_order(p.val_existing, p.val_declared))]
            if not change.feast_object_property_diffs:
                continue
        kept.add_feast_object_diff(change)
    return kept


def _only_meta(existing: Any, declared: Any) -> bool:
    """Whether two property values (protos, in Feast's diff) differ in their ``meta`` alone."""
    if not (hasattr(existing, "ClearField") and hasattr(declared, "ClearField")):
        return False
    if "meta" not in existing.DESCRIPTOR.fields_by_name or type(existing) is not type(declared):
        return False
    a, b = type(existing)(), type(declared)()
    a.CopyFrom(existing)
    b.CopyFrom(declared)
    a.ClearField("meta")
    b.ClearField("meta")
    return bool(a == b)


def _only_order(existing: Any, declared: Any) -> bool:
    """Whether two repeated message properties (a view's features) hold the same messages in
    another order (see :func:`_sort_features`)."""
    if isinstance(existing, (str, bytes)) or not (hasattr(existing, "__len__") and hasattr(declared, "__len__")):
        return False
    if not all(hasattr(item, "SerializeToString") for item in [*existing, *declared]):
        return False
    def wire(items: Any) -> list[bytes]:
        return sorted(item.SerializeToString(deterministic=True) for item in items)

    return wire(existing) == wire(declared)


def _contents(objects: Sequence[Any]) -> Any:
    """``objects`` sorted into Feast's ``RepoContents``, as ``feast plan`` parses a repo."""
    from feast import Entity, FeatureService, FeatureView, OnDemandFeatureView, StreamFeatureView
    from feast.data_source import DataSource
    from feast.labeling.label_view import LabelView
    from feast.project import Project
    from feast.repo_contents import RepoContents

    def of(kind: type, *, but: tuple[type, ...] = ()) -> list[Any]:
        return [o for o in objects if isinstance(o, kind) and not isinstance(o, but)]

    return RepoContents(
        projects=of(Project), data_sources=of(DataSource),
        feature_views=of(FeatureView, but=(StreamFeatureView,)),
        on_demand_feature_views=of(OnDemandFeatureView), stream_feature_views=of(StreamFeatureView),
        label_views=of(LabelView), entities=of(Entity), feature_services=of(FeatureService), permissions=[])


def _plain(text: str) -> str:
    """Feast's plan text without its terminal colour codes (it goes to a log)."""
    return re.sub(r"\x1b\[[0-9;]*m", "", text)
