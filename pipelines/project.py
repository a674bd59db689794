"""A tidemark project: a Feast repo plus ``tidemark.yaml`` beside its ``feature_store.yaml``.

    my_repo/
      feature_store.yaml       Feast's (offline store: tidemark's Spark plugin; online: packed Redis)
      definitions.py           entities, feature views, feature services
      tidemark.yaml            the models:

    models:
      - name: driver-completion             # the MLflow registered model
        features: driver_activity           # a FeatureService, or a list of view:feature references
        task: binary                        # binary | multiclass | regression
        label_source:                       # join keys, prediction time, label, when it was known
          table: ${TIDEMARK_HOME}/driver_example/data/trips
          label: completed
          join_keys: [trip_id]
        request_columns: [trip_distance_km]  # sent with each request, not read from the store
        entity_columns: [driver_id, rider_id]  # default: the features' join keys
        train: examples.driver.training:fit_completion   # (training frame) -> fitted model
        train_job: my_team.jobs:train        # instead of train: (settings, model, request) -> trained
        window_days: 14                      # retraining window, ending at the newest known label
        label_maturity_days: 2               # a label is final this long after its prediction
        drift: {psi: 0.2}                    # monitoring.drift.DriftThresholds fields
        canary: {min_dwell_s: 600}           # monitoring.rollout.CanaryPolicy fields, over the defaults
        push_scored_events: trips_push       # optional: push each scored request's rows as events to
                                             # this Feast PushSource before answering (its stream
                                             # views then count it for the entity's next request)

    feature_jobs:                            # optional: the feature_pipeline DAG's project jobs
      build: my_team.jobs:build_features     # (settings, first, last, *, checks) -> report (table(), record())
      sample_entities: my_team.jobs:sample   # (settings, start, end, *, sample, seed, read_at) -> entity rows
    datagen: my_team.data:main               # optional: `tidemark datagen ARGS` runs (settings, ARGS) -> exit code
    demo: my_team.demo:main                  # optional: `tidemark demo ARGS` runs (settings, ARGS) -> exit code

Entry points are ``package.module:function`` text, imported when used: a project's code lives with
the project, and tidemark imports none of it otherwise. A model declares ``train`` (tidemark builds
the frame, fits, registers) or ``train_job`` (its own job does all three, honouring what it can of
the :class:`~pipelines.project_training.TrainRequest`: cutoff, window, seed, epochs …; it returns an
object with ``version`` (the registered ``ModelVersion``), ``run_id`` and ``summary()``). Without
``feature_jobs`` the feature pipeline only materializes and checks freshness; ``sample_entities``
returns the entity rows (join keys; an optional boolean ``pending`` column marks rows whose offline
data arrived after ``end``) on which online values are compared with the offline store's.

Without ``--repo`` the project is the bundled example's (``examples/fraud/feature_repo``; see
:attr:`tidemark.settings.Settings.project_repo`), with ``${TIDEMARK_HOME}`` read as the
settings' home.

``${VAR}`` is replaced from the environment (as Feast does in ``feature_store.yaml``) and a relative
``table`` is read from the project folder. Selected with ``TIDEMARK_FEAST_REPO=PATH`` or
``tidemark --repo PATH``. A mistake is a :class:`~pipelines.errors.ProjectError` naming the file,
the line and the key, with near matches for a misspelt key.
"""

from __future__ import annotations

import dataclasses
import difflib
import importlib
import os
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field, fields
from pathlib import Path
from typing import TYPE_CHECKING, Any

from monitoring.drift import DriftThresholds
from monitoring.rollout import CanaryPolicy
from pipelines.errors import ProjectError
from serving.model_contract import TASKS, LabelSource

if TYPE_CHECKING:
    from tidemark.settings import Settings

__all__ = ["PROJECT_FILE", "Project", "ProjectModel", "declared_model", "import_entry_point", "load_project",
           "model_names", "project_model", "settings_project"]

PROJECT_FILE = "tidemark.yaml"
_MODEL_KEYS = ("name", "features", "task", "label_source", "request_columns", "entity_columns", "routing_key",
               "train", "train_job", "window_days", "label_maturity_days", "validation_share", "drift", "canary",
               "push_scored_events")
_PROJECT_KEYS = ("models", "feature_jobs", "datagen", "demo")
_FEATURE_JOBS = ("build", "sample_entities")


def import_entry_point(spec: str, what: str) -> Callable[..., Any]:
    """The function that ``spec`` (``package.module:function``) names; ``what`` says whose it is
    in the error."""
    module_name, _, function = spec.partition(":")
    try:
        found = getattr(importlib.import_module(module_name), function)
    except (ImportError, AttributeError) as exc:
        raise ProjectError(f"{what}: entry point {spec!r} can't be imported ({exc}); "
                           "it must be 'package.module:function' on the Python path") from None
    if not callable(found):
        raise ProjectError(f"{what}: {spec!r} is not a function")
    return found  # type: ignore[no-any-return]


@dataclass(frozen=True)
class ProjectModel:
    """One model a project declares (see the module docstring for each key)."""

    name: str
    features: str | tuple[str, ...]
    task: str
    label_source: LabelSource
    train: str = ""                    # (training frame) -> fitted model; "" when train_job is given
    train_job: str | None = None       # (settings, model, request) -> trained: the model's own job
    request_columns: tuple[str, ...] = ()
    entity_columns: tuple[str, ...] = ()
    routing_key: str | None = None
    window_days: float = 30.0
    label_maturity_days: float = 0.0   # after this long a row's label is final (drift and the gate wait for it)
    validation_share: float = 0.2
    drift: DriftThresholds = field(default_factory=DriftThresholds)
    canary: Mapping[str, Any] = field(default_factory=dict)
    push_scored_events: str | None = None  # a push source: scored rows are pushed to it (checked at `serve`)

    def entry_point(self) -> Callable[..., Any]:
        """The ``train`` function, imported (``module:function``)."""
        if not self.train:
            raise ProjectError(f"model {self.name!r} declares no train entry point (it has train_job {self.train_job!r})")
        return import_entry_point(self.train, f"model {self.name!r}: train")

    def job(self) -> Callable[..., Any] | None:
        """The ``train_job`` function, imported; None when the model has none."""
        return import_entry_point(self.train_job, f"model {self.name!r}: train_job") if self.train_job else None


@dataclass(frozen=True)
class Project:
    """A Feast repo and the models it declares, in file order."""

    repo: Path
    models: tuple[ProjectModel, ...]
    feature_jobs: Mapping[str, str] = field(default_factory=dict)  # build, sample_entities: module:function
    datagen: str | None = None                                      # what `tidemark datagen` runs
    demo: str | None = None                                         # what `tidemark demo` runs

    def hook(self, name: str) -> Callable[..., Any] | None:
        """A project-level entry point, imported: ``datagen``, ``demo`` or a ``feature_jobs`` key;
        None when not declared."""
        spec = getattr(self, name) if name in ("datagen", "demo") else self.feature_jobs.get(name)
        return import_entry_point(spec, f"{self.repo / PROJECT_FILE}: {name}") if spec else None

    def model(self, name: str | None) -> ProjectModel:
        """The model called ``name``; without a name, the only one (or an error listing them)."""
        names = [m.name for m in self.models]
        if name is None:
            if len(self.models) == 1:
                return self.models[0]
            raise ProjectError(f"{self.repo / PROJECT_FILE} declares {len(names)} models ({', '.join(names)}); "
                               "pick one with --model NAME")
        for m in self.models:
            if m.name == name:
                return m
        near = difflib.get_close_matches(name, names, n=3, cutoff=0.5)
        hint = f"did you mean {', '.join(map(repr, near))}? " if near else ""
        raise ProjectError(f"no model {name!r} in {self.repo / PROJECT_FILE}; {hint}declared: {', '.join(names)}")


def settings_project(settings: Settings) -> Project:
    """The project ``settings`` select (:attr:`~tidemark.settings.Settings.project_repo`: ``--repo``,
    else the bundled example), with ``${TIDEMARK_HOME}`` the settings' home."""
    return load_project(settings.project_repo, env={**os.environ, "TIDEMARK_HOME": str(settings.home)})


def project_model(settings: Settings, name: str | None) -> ProjectModel:
    """The model ``name`` of the project ``settings`` select. The bundled example's only model
    also answers to another registered name (``TIDEMARK_MODEL_NAME``), as it always has."""
    project = settings_project(settings)
    if settings.feast_repo is None and name and len(project.models) == 1 and project.models[0].name != name:
        return dataclasses.replace(project.models[0], name=name)
    return project.model(name)


def model_names(settings: Settings) -> list[str]:
    """The models a deployment runs: its project's, in file order; the bundled example's one."""
    if settings.feast_repo is None:
        return [settings.model_name]
    return [m.name for m in settings_project(settings).models]


def declared_model(settings: Settings) -> ProjectModel | None:
    """``settings.model_name`` as a team's project file declares it, for its drift and canary
    policies (None for the bundled example, which keeps the defaults, or a model the file does
    not declare)."""
    if settings.feast_repo is None:
        return None
    return {m.name: m for m in settings_project(settings).models}.get(settings.model_name)


def load_project(repo: Path | str, env: Mapping[str, str] | None = None) -> Project:
    """Read ``repo/tidemark.yaml`` (``${VAR}`` from ``env``, default ``os.environ``)."""
    repo = Path(repo).expanduser().resolve()
    path = repo / PROJECT_FILE
    if not (repo / "feature_store.yaml").exists():
        raise ProjectError(f"{repo} is not a Feast repo (no feature_store.yaml); point --repo / TIDEMARK_FEAST_REPO "
                           "at the folder that holds it")
    if not path.exists():
        raise ProjectError(f"{path} does not exist; add it beside feature_store.yaml to list the repo's models")
    data, lines = _read(path, os.environ if env is None else env)
    where = _Where(path, lines)
    if not isinstance(data, dict):
        raise ProjectError(where.at((), f"the file is a mapping of {', '.join(_PROJECT_KEYS)}; got {data!r:.60}"))
    _known(data, _PROJECT_KEYS, (), where)
    raw = data.get("models")
    if not isinstance(raw, list) or not raw:
        raise ProjectError(where.at(("models",), "models must be a non-empty list of models"))
    models = tuple(_model(item, ("models", i), where, repo) for i, item in enumerate(raw))
    seen: dict[str, int] = {}
    for i, m in enumerate(models):
        if m.name in seen:
            raise ProjectError(where.at(("models", i, "name"), f"two models are named {m.name!r} (also models[{seen[m.name]}]); "
                                        "each registered model needs its own name"))
        seen[m.name] = i
    jobs = _mapping(data.get("feature_jobs") or {}, ("feature_jobs",), where)
    _known(jobs, _FEATURE_JOBS, ("feature_jobs",), where)
    for key in jobs:
        _entry_text(jobs, key, ("feature_jobs",), where)
    command = (lambda key: _entry_text(data, key, (), where) if data.get(key) is not None else None)
    return Project(repo, models, feature_jobs=jobs, datagen=command("datagen"), demo=command("demo"))


class _Where:
    """Turns a key path into ``file line N: models[0].task``."""

    def __init__(self, path: Path, lines: dict[tuple[Any, ...], int]) -> None:
        self.path, self.lines = path, lines

    def at(self, loc: tuple[Any, ...], message: str) -> str:
        line = next((self.lines[loc[:n]] for n in range(len(loc), -1, -1) if loc[:n] in self.lines), None)
        key = "".join(f"[{p}]" if isinstance(p, int) else f".{p}" for p in loc).lstrip(".")
        return f"{self.path}{f' line {line}' if line else ''}{f': {key}' if key else ''}: {message}"


def _model(item: Any, loc: tuple[Any, ...], where: _Where, repo: Path) -> ProjectModel:
    if not isinstance(item, dict):
        raise ProjectError(where.at(loc, "each model is a mapping with name, features, task, label_source, train"))
    _known(item, _MODEL_KEYS, loc, where)
    for key in ("name", "features", "task", "label_source"):
        if key not in item:
            raise ProjectError(where.at(loc, f"{key} is required"))
    if "train" not in item and "train_job" not in item:
        raise ProjectError(where.at(loc, "train is required (or train_job, the model's own training job)"))
    text = (lambda key: _text(item, key, loc, where))
    task = text("task")
    train = _entry_text(item, "train", loc, where) if "train" in item else ""
    job = _entry_text(item, "train_job", loc, where) if "train_job" in item else None
    if task not in TASKS:
        raise ProjectError(where.at((*loc, "task"), f"{task!r} is not one of {', '.join(TASKS)}"))
    features = item["features"]
    if not (isinstance(features, str) and features) and not _strings(features):
        raise ProjectError(where.at((*loc, "features"), "a FeatureService name or a list of 'view:feature' references"))
    try:
        source = LabelSource.from_dict(item["label_source"], "label_source")
    except Exception as exc:  # noqa: BLE001  (ContractError: re-raised with the line)
        raise ProjectError(where.at((*loc, "label_source"), str(exc))) from None
    table = _located(source.table, repo)
    return ProjectModel(
        name=text("name"), features=features if isinstance(features, str) else tuple(features), task=task,
        label_source=dataclasses.replace(source, table=table, entities=_located(source.entities, repo)),
        train=train, train_job=job, request_columns=_list(item, "request_columns", loc, where),
        entity_columns=_list(item, "entity_columns", loc, where), routing_key=item.get("routing_key"),
        window_days=_number(item, "window_days", 30.0, loc, where),
        label_maturity_days=_number(item, "label_maturity_days", 0.0, loc, where, zero=True),
        validation_share=_number(item, "validation_share", 0.2, loc, where, below=1.0),
        drift=_policy(DriftThresholds, item.get("drift") or {}, (*loc, "drift"), where),
        canary=_canary(item.get("canary") or {}, (*loc, "canary"), where),
        push_scored_events=text("push_scored_events") if item.get("push_scored_events") is not None else None)


def _located(table: str, repo: Path) -> str:
    """A relative Parquet path is read from the project folder; URLs, absolute paths, table names
    (no ``/``) and "" stay as they are."""
    if not table or "://" in table or Path(table).is_absolute() or "/" not in table:
        return table
    return str(repo / table)


def _known(raw: Mapping[str, Any], known: tuple[str, ...], loc: tuple[Any, ...], where: _Where) -> None:
    for key in raw:
        if key not in known:
            near = difflib.get_close_matches(str(key), known, n=1, cutoff=0.6)
            hint = f"did you mean {near[0]!r}? " if near else ""
            raise ProjectError(where.at((*loc, key), f"unknown key; {hint}known: {', '.join(known)}"))


def _policy(kind: Any, raw: Any, loc: tuple[Any, ...], where: _Where) -> Any:
    names = tuple(f.name for f in fields(kind))
    _known(_mapping(raw, loc, where), names, loc, where)
    for key, value in raw.items():
        if isinstance(value, bool) or not isinstance(value, int | float):
            raise ProjectError(where.at((*loc, key), f"must be a number, got {value!r:.40}"))
    return kind(**raw)


def _canary(raw: Any, loc: tuple[Any, ...], where: _Where) -> dict[str, Any]:
    """The declared canary policy fields (applied over the deployment's defaults when a canary is
    judged), checked now: known fields, numbers (or null where the policy allows none), in range."""
    declared = _mapping(raw, loc, where)
    _known(declared, tuple(f.name for f in fields(CanaryPolicy)), loc, where)
    for key, value in declared.items():
        if isinstance(value, bool) or not (isinstance(value, int | float) or value is None):
            raise ProjectError(where.at((*loc, key), f"must be a number, got {value!r:.40}"))
    try:
        CanaryPolicy(**declared)
    except (TypeError, ValueError) as exc:
        raise ProjectError(where.at(loc, str(exc))) from None
    return declared


def _mapping(raw: Any, loc: tuple[Any, ...], where: _Where) -> dict[str, Any]:
    if not isinstance(raw, dict):
        raise ProjectError(where.at(loc, f"must be a mapping, got {raw!r:.40}"))
    return dict(raw)


def _text(item: Mapping[str, Any], key: str, loc: tuple[Any, ...], where: _Where) -> str:
    value = item[key]
    if not isinstance(value, str) or not value:
        raise ProjectError(where.at((*loc, key), f"must be non-empty text, got {value!r:.40}"))
    return value


def _entry_text(item: Mapping[str, Any], key: str, loc: tuple[Any, ...], where: _Where) -> str:
    """An entry point: ``package.module:function`` text (imported only when used)."""
    value = _text(item, key, loc, where)
    if ":" not in value:
        raise ProjectError(where.at((*loc, key), f"{value!r} must be 'package.module:function'"))
    return value


def _list(item: Mapping[str, Any], key: str, loc: tuple[Any, ...], where: _Where) -> tuple[str, ...]:
    value = item.get(key, [])
    if not _strings(value):
        raise ProjectError(where.at((*loc, key), f"must be a list of names, got {value!r:.40}"))
    return tuple(value)


def _number(item: Mapping[str, Any], key: str, default: float, loc: tuple[Any, ...], where: _Where,
            below: float | None = None, zero: bool = False) -> float:
    value = item.get(key, default)
    low = value < 0 if zero else value <= 0
    if isinstance(value, bool) or not isinstance(value, int | float) or low or (below and value >= below):
        bound = f" and below {below}" if below else ""
        raise ProjectError(where.at((*loc, key), f"must be a number {'of 0 or more' if zero else 'above 0'}{bound}, "
                                                 f"got {value!r:.40}"))
    return float(value)


def _strings(value: Any) -> bool:
    return isinstance(value, list) and all(isinstance(v, str) and v for v in value)


def _read(path: Path, env: Mapping[str, str]) -> tuple[Any, dict[tuple[Any, ...], int]]:
    """The file's data, with ``${VAR}`` replaced, and the line (1-based) of every key path."""
    import yaml

    try:
        node = yaml.compose(path.read_text())
        lines: dict[tuple[Any, ...], int] = {}
        return (_plain(node, (), lines, env) if node is not None else None), lines
    except yaml.YAMLError as exc:
        raise ProjectError(f"{path}: not valid YAML: {exc}") from None
    except ProjectError as exc:
        raise ProjectError(f"{path} {exc}") from None


def _plain(node: Any, loc: tuple[Any, ...], lines: dict[tuple[Any, ...], int], env: Mapping[str, str]) -> Any:
    import yaml

    lines[loc] = node.start_mark.line + 1
    if isinstance(node, yaml.MappingNode):
        out = {}
        for key_node, value_node in node.value:
            key = key_node.value
            lines[(*loc, key)] = key_node.start_mark.line + 1
            out[key] = _plain(value_node, (*loc, key), lines, env)
            lines[(*loc, key)] = key_node.start_mark.line + 1  # the key's line, not its value's
        return out
    if isinstance(node, yaml.SequenceNode):
        return [_plain(item, (*loc, i), lines, env) for i, item in enumerate(node.value)]
    value = yaml.safe_load(yaml.serialize(node))  # the scalar with YAML's own typing
    try:
        return _expand(value, env) if isinstance(value, str) else value
    except ProjectError as exc:
        raise ProjectError(f"line {lines[loc]}: {exc}") from None


def _expand(text: str, env: Mapping[str, str]) -> str:
    """``${VAR}`` from ``env``; an unset variable is an error, not an empty string."""
    import re

    def one(match: re.Match[str]) -> str:
        name = match.group(1)
        if name not in env:
            raise ProjectError(f"{text!r} names ${{{name}}}, which is not set; export it or write the value")
        return env[name]

    return re.sub(r"\$\{([A-Za-z_][A-Za-z0-9_]*)\}", one, text)
