"""The MLflow model registry: registered versions and the aliases that say which one serves.

    new version ──register()──► alias "challenger"   (a new version is only ever a challenger)
                                     │ gate verdict recorded as tags on the version (pipelines.gate)
                                     ▼
    promote() ── "previous-champion" := old champion, then "champion" := challenger
    rollback() ─ "champion" := "previous-champion" (gone: the newest healthy champion in the alias history)

Every move is appended to the model's alias history (:mod:`pipelines.alias_history`: one tag per
move on the registered model, and a table in its description), with who moved it and why.

Each alias move is one ``MlflowClient.set_registered_model_alias`` call, which the registry
applies as a single update, so a reader of ``models:/<name>@champion`` always gets a whole
version, before or after the swap, never none. ``previous-champion`` is set before ``champion``
moves, so a rollback target exists from the moment the new champion does.

Only this module (and :mod:`examples.fraud.train_job`, which logs runs) talks to MLflow for
``pipelines``; it owns the tracking URI (``Settings.tracking_uri``) and where local artifacts go.
"""

from __future__ import annotations

import logging
import os
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import TYPE_CHECKING, Any

from pipelines import alias_history
from pipelines.alias_history import Move
from pipelines.errors import GateError, ModelVersionError, NoChampionError, RegistryError
from tidemark.extras import require

if TYPE_CHECKING:
    from mlflow import MlflowClient
    from mlflow.entities.model_registry import ModelVersion

    from pipelines.model_registration import register_model
    from tidemark.settings import Settings

__all__ = ["CHALLENGER", "CHAMPION", "PREVIOUS_CHAMPION", "Promotion", "alias_version", "connect",
           "experiment_id", "model_version", "promote", "record_gate", "register", "register_model", "require_gate",
           "resolve_version", "rollback"]

log = logging.getLogger(__name__)

CHAMPION = "champion"
CHALLENGER = "challenger"
PREVIOUS_CHAMPION = "previous-champion"
GATE_PREFIX = "gate."
STATE_TAG = "tidemark.state"  # "ready" once registration finished; anything else is never promoted
_GATE_PARAGRAPH = "\n\nEvaluation gate: "  # starts the verdict's paragraph of a version's description
_MODEL_DESCRIPTION = ("A model trained from tidemark's point-in-time feature frames; its contract (features, task, "
                      "label source) is each version's tidemark.contract tag. Aliases: champion (serving), "
                      "challenger (newest candidate), previous-champion (rollback target).")


def __getattr__(name: str) -> Any:
    # register_model lives in pipelines.model_registration, which imports this module: re-exported
    # lazily so that either module can be imported first.
    if name == "register_model":
        from pipelines.model_registration import register_model

        return register_model
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")


def connect(settings: Settings) -> MlflowClient:
    """An ``MlflowClient`` on ``settings.tracking_uri``; also points MLflow's fluent API there."""
    import mlflow
    from mlflow import MlflowClient

    uri = settings.tracking_uri
    if uri.startswith("postgresql"):
        require("psycopg", "postgres", f"an MLflow store on PostgreSQL ({uri.split('@')[-1]})")
    if uri.startswith("sqlite:///"):
        settings.home.mkdir(parents=True, exist_ok=True)
        _create_sqlite_store(uri)
    # MLflow also exports these URIs as MLFLOW_TRACKING_URI / MLFLOW_REGISTRY_URI (for child
    # processes); Settings.from_env reads the first as the user's choice, so a connect for one home
    # redirected every later from_env in the process (a DAG task's, a test module's) to it
    exported = {k: os.environ.get(k) for k in ("MLFLOW_TRACKING_URI", "MLFLOW_REGISTRY_URI")}
    mlflow.set_tracking_uri(uri)
    mlflow.set_registry_uri(uri)
    for key, value in exported.items():
        if value is None:
            os.environ.pop(key, None)
        else:
            os.environ[key] = value
    return MlflowClient(tracking_uri=uri, registry_uri=uri)


_CREATED: set[str] = set()  # SQLite stores this process has made sure exist


def _create_sqlite_store(uri: str) -> None:
    """Create (or migrate) a SQLite store under an exclusive lock on ``<db>.lock``, once per
    process: two processes opening a new store at once (an Airflow task and the CLI, on the
    default store under ``$TIDEMARK_HOME``) would both run its migrations, and one fails with
    "table _alembic_tmp_… already exists"."""
    import fcntl

    from mlflow import MlflowClient

    if uri in _CREATED:
        return
    path = uri.removeprefix("sqlite:///").split("?", 1)[0]
    with open(f"{path}.lock", "a") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        try:
            client = MlflowClient(tracking_uri=uri, registry_uri=uri)
            client.search_experiments(max_results=1)  # the tracking store: its migrations
            client.search_registered_models(max_results=1)  # the registry's, on the same DB
        finally:
            fcntl.flock(lock, fcntl.LOCK_UN)
    _CREATED.add(uri)


def experiment_id(client: MlflowClient, settings: Settings, model_name: str) -> str:
    """The experiment holding ``model_name``'s training runs (named after the model), created on
    first use; with the default local store its artifacts go under ``$TIDEMARK_HOME/mlartifacts``
    rather than wherever the process happens to run."""
    found = client.get_experiment_by_name(model_name)
    if found is not None:
        if found.lifecycle_stage == "deleted":
            raise RegistryError(f"MLflow experiment {model_name!r} is deleted; restore it in the MLflow UI "
                                "(or `mlflow experiments restore`) or pick another model name")
        return str(found.experiment_id)
    location = None
    if _is_database(settings.tracking_uri):
        # A database store has no artifact server: MLflow would write to ./mlruns of whatever
        # directory the process runs in. An MLflow server (http) decides for itself.
        location = (settings.mlflow_artifacts_dir / model_name).as_uri()
    return str(client.create_experiment(model_name, artifact_location=location,
                                        tags={"tidemark.model": model_name}))


def register(client: MlflowClient, name: str, model_uri: str, *, run_id: str, tags: dict[str, str],
             description: str) -> ModelVersion:
    """Register ``model_uri`` as a new version of ``name`` and point ``challenger`` at it.

    All or nothing: if anything fails after the version exists (tags, alias), the version is
    deleted again before the error propagates, so no half-registered version is left behind.
    """
    import mlflow

    # "pending" until every step is done: a process killed half way leaves a version that
    # promote() refuses, even where the cleanup below never ran.
    version = mlflow.register_model(model_uri, name, tags={**tags, STATE_TAG: "pending"})
    try:
        if not client.get_registered_model(name).description:
            client.update_registered_model(name, description=_MODEL_DESCRIPTION)
        if version.status != "READY":
            raise RegistryError(f"version {version.version} of {name!r} is {version.status}, not READY: "
                                f"{version.status_message}")
        client.update_model_version(name, str(version.version), description=description)
        client.set_model_version_tag(name, str(version.version), "run_id", run_id)
        before = alias_version(client, name, CHALLENGER)
        client.set_registered_model_alias(name, CHALLENGER, str(version.version))
        alias_history.record(client, name, [Move(CHALLENGER, str(version.version), _number(before))],
                             action="register", reason=f"registered from run {run_id}")
        client.set_model_version_tag(name, str(version.version), STATE_TAG, "ready")
    except BaseException:
        log.warning("registering %s v%s failed; deleting the version", name, version.version)
        client.delete_model_version(name, str(version.version))
        raise
    return client.get_model_version(name, str(version.version))


def alias_version(client: MlflowClient, name: str, alias: str) -> ModelVersion | None:
    """The version ``alias`` points at, or None (also when the model isn't registered)."""
    from mlflow.exceptions import MlflowException

    try:
        return client.get_model_version_by_alias(name, alias)
    except MlflowException as exc:
        if exc.error_code in ("RESOURCE_DOES_NOT_EXIST", "INVALID_PARAMETER_VALUE"):
            return None
        raise


def model_version(client: MlflowClient, name: str, version: str | int) -> ModelVersion:
    """One version of ``name``; :class:`ModelVersionError` if it doesn't exist."""
    from mlflow.exceptions import MlflowException

    try:
        return client.get_model_version(name, str(version))
    except MlflowException:
        raise ModelVersionError(f"model {name!r} has no version {version}; `tidemark models` lists them") from None


@dataclass(frozen=True)
class Promotion:
    """What an alias swap did."""

    name: str
    champion: str                     # the version now serving
    previous: str | None              # the version it replaced (now ``previous-champion``)


def promote(client: MlflowClient, name: str, version: str | int | None = None, *, first: bool = False,
            reason: str = "", action: str = "promote") -> Promotion:
    """Make ``version`` (default: the ``challenger``) the champion.

    ``first=True`` is for a model with no champion yet and skips the gate. Otherwise the version
    must have passed the evaluation gate, and the gate must have been run against the current
    champion (a verdict against an older champion is stale). The alias history records the moves
    with ``action`` and the gate verdict, then ``reason`` (e.g. the canary's evidence).
    """
    target = resolve_version(client, name, version)
    if target.tags.get(STATE_TAG) != "ready":
        raise ModelVersionError(f"v{target.version} of {name!r} did not finish registering "
                                f"({STATE_TAG}={target.tags.get(STATE_TAG)!r}); train again, and delete it")
    champion = alias_version(client, name, CHAMPION)
    if first:
        if champion is not None:
            raise RegistryError(f"{name!r} already has champion v{champion.version}; --first is only for a "
                                "model's first champion: run `tidemark gate`, then `tidemark promote`")
    else:
        if champion is None:
            raise NoChampionError(f"{name!r} has no champion yet; promote its first version with "
                                  f"`tidemark promote --first` (version {target.version} is the candidate)")
        if str(champion.version) == str(target.version):
            raise RegistryError(f"v{target.version} is already the champion of {name!r}")
        require_gate(target, champion)
    _unchanged(client, name, champion)
    old, new = (str(champion.version) if champion else None), str(target.version)
    moves = []
    if champion is not None:
        before = alias_version(client, name, PREVIOUS_CHAMPION)
        client.set_registered_model_alias(name, PREVIOUS_CHAMPION, str(champion.version))
        moves.append(Move(PREVIOUS_CHAMPION, old, _number(before)))
    client.set_registered_model_alias(name, CHAMPION, new)
    moves.append(Move(CHAMPION, new, old))
    challenger = alias_version(client, name, CHALLENGER)
    if challenger is not None and str(challenger.version) == new:
        client.delete_registered_model_alias(name, CHALLENGER)
        moves.append(Move(CHALLENGER, None, new))
    alias_history.record(client, name, moves, action=action, reason=_promotion_reason(target, first, reason))
    client.set_model_version_tag(name, str(target.version), "promoted_at", _now())
    log.info("%s: champion v%s (was %s)", name, target.version, champion.version if champion else "none")
    return Promotion(name, str(target.version), str(champion.version) if champion else None)


def rollback(client: MlflowClient, name: str, *, reason: str = "") -> Promotion:
    """Point ``champion`` back at ``previous-champion`` (one call; the alias is then removed so
    a second rollback can't flip forward again). Without ``previous-champion`` (a first rollback
    removed it) the target is :func:`pipelines.alias_history.rollback_target`: the newest champion
    in the alias history that is not the current one and was not rolled back. The demoted version
    is tagged with ``reason`` and its gate verdict is revoked."""
    current = alias_version(client, name, CHAMPION)
    previous = alias_version(client, name, PREVIOUS_CHAMPION)
    had_previous = previous is not None
    if previous is None:
        previous = _from_history(client, name, current)
    elif current is not None and str(current.version) == str(previous.version):
        raise RegistryError(f"champion and previous-champion of {name!r} are both v{current.version} (an "
                            "interrupted promotion?); nothing to roll back to: promote a version explicitly")
    client.set_registered_model_alias(name, CHAMPION, str(previous.version))
    moves = [Move(CHAMPION, str(previous.version), _number(current))]
    if had_previous:
        client.delete_registered_model_alias(name, PREVIOUS_CHAMPION)
        moves.append(Move(PREVIOUS_CHAMPION, None, str(previous.version)))
    alias_history.record(client, name, moves, action="rollback", reason=reason or "manual")
    if current is not None:
        client.set_model_version_tag(name, str(current.version), "rolled_back_at", _now())
        client.set_model_version_tag(name, str(current.version), "rolled_back_reason", reason or "manual")
        # Its gate verdict predates what production showed; promoting it again takes a fresh gate.
        client.set_model_version_tag(name, str(current.version), GATE_PREFIX + "verdict", "revoked")
        client.set_model_version_tag(name, str(current.version), GATE_PREFIX + "reason",
                                     f"rolled back: {reason or 'manual'}")
    log.info("%s: rolled back to v%s (from %s)", name, previous.version, current.version if current else "none")
    return Promotion(name, str(previous.version), str(current.version) if current else None)


def _from_history(client: MlflowClient, name: str, current: ModelVersion | None) -> ModelVersion:
    """The rollback target when ``previous-champion`` is gone: see :func:`alias_history.rollback_target`."""
    history = alias_history.read(client, name)
    target = alias_history.rollback_target(history, _number(current))
    if target is None:
        raise ModelVersionError(f"{name!r} has no previous-champion to roll back to, and its alias history "
                                "(`tidemark models history`) holds no earlier champion that was not rolled back; "
                                "promote a version explicitly: `tidemark promote --version N`")
    return model_version(client, name, target)


def _promotion_reason(target: ModelVersion, first: bool, reason: str) -> str:
    """The history's reason for a promotion: the gate verdict it rests on, then the caller's reason."""
    tags: dict[str, Any] = dict(target.tags)
    gate = ("first champion (no gate)" if first else
            f"gate {tags.get(GATE_PREFIX + 'verdict')} vs v{tags.get(GATE_PREFIX + 'champion_version')}: "
            f"{tags.get(GATE_PREFIX + 'reason', '')}")
    return f"{gate}; {reason}" if reason else gate


def record_gate(client: MlflowClient, name: str, version: str, tags: dict[str, str], *,
                description: str = "") -> None:
    """Store a gate verdict as ``gate.*`` tags on ``version`` (old gate tags are replaced) and,
    given ``description``, as the last paragraph of the version's description (the text from
    registration stays first; an earlier verdict's paragraph is replaced)."""
    current = model_version(client, name, version)
    for key in list(current.tags):
        if key.startswith(GATE_PREFIX) and key not in tags:
            client.delete_model_version_tag(name, version, key)
    for key, value in tags.items():
        client.set_model_version_tag(name, version, key, value)
    if description:
        kept = (current.description or "").split(_GATE_PARAGRAPH, 1)[0].rstrip()
        client.update_model_version(name, version, description=f"{kept}{_GATE_PARAGRAPH}{description}".lstrip())


def resolve_version(client: MlflowClient, name: str, version: str | int | None) -> ModelVersion:
    """``version`` of ``name``, or the current challenger when ``version`` is None."""
    if version is not None:
        return model_version(client, name, version)
    challenger = alias_version(client, name, CHALLENGER)
    if challenger is None:
        raise ModelVersionError(f"{name!r} has no challenger; train one with `tidemark train`, or pass --version")
    return challenger


def require_gate(target: ModelVersion, champion: ModelVersion) -> None:
    """Raise :class:`GateError` unless ``target`` passed the gate against ``champion``."""
    tags: dict[str, Any] = dict(target.tags)
    verdict = tags.get(GATE_PREFIX + "verdict")
    if verdict != "pass":
        why = tags.get(GATE_PREFIX + "reason", "the gate has not been run")
        raise GateError(f"v{target.version} has not passed the evaluation gate ({verdict or 'no verdict'}: "
                        f"{why}); run `tidemark gate --version {target.version}`; a failing challenger "
                        "is never promoted")
    against = tags.get(GATE_PREFIX + "champion_version")
    if against != str(champion.version):
        raise GateError(f"v{target.version} passed the gate against v{against}, but the champion is now "
                        f"v{champion.version}; run `tidemark gate --version {target.version}` again")


def _unchanged(client: MlflowClient, name: str, champion: ModelVersion | None) -> None:
    """Re-read the champion just before moving aliases: the checks above were made against it.

    This narrows, not closes, the window for a concurrent promote or rollback (the registry has
    no compare-and-set); alias moves of one model are meant to run one at a time (the canary
    DAG runs with max_active_runs=1).
    """
    now = alias_version(client, name, CHAMPION)
    if (now and str(now.version)) != (champion and str(champion.version)):
        raise GateError(f"the champion of {name!r} changed from v{champion.version if champion else None} to "
                        f"v{now.version if now else None} during this promotion; run the gate again")


def _number(version: ModelVersion | None) -> str | None:
    """A version's number as text, None for no version."""
    return None if version is None else str(version.version)


def _is_database(uri: str) -> bool:
    return uri.split(":", 1)[0].split("+", 1)[0] in {"sqlite", "postgresql", "mysql", "mssql"}


def _now() -> str:
    return datetime.now(UTC).isoformat(timespec="seconds")
