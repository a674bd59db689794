"""What a registered model version needs, stored with it: the model contract.

    register_model / tidemark train ──► version tag ``tidemark.contract`` (JSON, schema 1)
                                             │ read back by serving, drift, the gate, the canary
                                             ▼
    features (view:feature, resolved from a FeatureService when one is named), join keys and
    their kinds (from Feast), model inputs in order, request columns (inputs that are not
    features), text inputs, routing key, task, classes, label source

The JSON is plain (no tidemark types), so a reader needs only MLflow: ``json.loads(
client.get_model_version(name, v).tags["tidemark.contract"])``. The readable ``tidemark.task``,
``tidemark.features`` and ``tidemark.join_keys`` tags repeat the essentials for the MLflow UI.

Tasks and what a prediction is:
    binary       P(positive class), float64 per row; the positive class is ``classes[1]``
    multiclass   one probability per class, in the order of ``classes``
    regression   the predicted value, float64 per row
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from dataclasses import asdict, dataclass, field
from typing import Any, Final, Literal, cast

import numpy as np

from serving.errors import ContractError, ContractMissingError

__all__ = ["CONTRACT_TAG", "TASKS", "LabelSource", "ModelContract", "Task"]

CONTRACT_TAG: Final = "tidemark.contract"
SCHEMA: Final = 1
Task = Literal["binary", "multiclass", "regression"]
TASKS: Final[tuple[str, ...]] = ("binary", "multiclass", "regression")
KEY_KINDS: Final = ("int", "str")


@dataclass(frozen=True)
class LabelSource:
    """Where a model's labels come from: a table with the join keys, the prediction time, the
    label and the time each label became known (a label is used only once known, so delayed
    labels stay point-in-time correct).

    ``table`` is a Parquet path (file or folder) or a Spark table name. ``join_keys`` name the
    columns that identify the scored row; by default the model's join keys, but an event id
    (``trip_id``) is usual where one entity is scored many times. Where the labels live apart from
    the events they label, ``entities`` names the events' table (the row ids, the model's join keys
    and request columns, and the prediction time in ``entity_time``): the rows a model is trained
    or judged on are those events; otherwise the label table's own rows are.
    """

    table: str
    label: str
    join_keys: tuple[str, ...] = ()
    prediction_time: str = "event_timestamp"
    known_at: str = "label_timestamp"
    entities: str = ""
    entity_time: str = "event_timestamp"

    @classmethod
    def from_dict(cls, raw: Mapping[str, Any], where: str = "label_source") -> LabelSource:
        """Build from plain data (a YAML or JSON object); unknown keys are refused."""
        known = {"table", "label", "join_keys", "prediction_time", "known_at", "entities", "entity_time"}
        _no_unknown(raw, known, where)
        for key in ("table", "label"):
            if not isinstance(raw.get(key), str) or not raw[key]:
                raise ContractError(f"{where}.{key} is required: a non-empty string")
        return cls(table=raw["table"], label=raw["label"], join_keys=_names(raw.get("join_keys", ()), f"{where}.join_keys"),
                   prediction_time=_text(raw, "prediction_time", "event_timestamp", where),
                   known_at=_text(raw, "known_at", "label_timestamp", where),
                   entities=_text(raw, "entities", "", where), entity_time=_text(raw, "entity_time", "event_timestamp", where))


@dataclass(frozen=True)
class ModelContract:
    """Everything serving, drift, the gate and the canary need to know about a model version."""

    features: tuple[str, ...]          # ``view:feature`` references the model reads from the store
    join_keys: tuple[str, ...]         # entity columns a request carries (sorted, from Feast)
    key_kinds: tuple[str, ...]         # "int" or "str" per join key (the entity's value type)
    inputs: tuple[str, ...]            # the model's input columns, in the order it takes them
    task: Task
    routing_key: str = ""              # sticky canary splits hash this join key; default: the first
    text_columns: tuple[str, ...] = ()  # inputs that are text (categories), not numbers
    classes: tuple[str, ...] = ()      # binary: (negative, positive); multiclass: probability order
    feature_service: str | None = None  # the Feast FeatureService the features came from, if any
    feast_project: str = ""
    feast_repo: str = ""               # the Feast repo folder as registered ("" = the bundled example)
    label: LabelSource | None = None
    output: str = "prediction"         # the name of the model's output column (its MLflow signature)
    extra: Mapping[str, str] = field(default_factory=dict)  # free-form, e.g. the training entry point

    def __post_init__(self) -> None:
        if not self.routing_key and self.join_keys:
            object.__setattr__(self, "routing_key", self.join_keys[0])
        self._check()

    @property
    def request_columns(self) -> tuple[str, ...]:
        """Inputs that come with the request rather than from the store."""
        stored = self.feature_names
        return tuple(c for c in self.inputs if c not in stored)

    @property
    def feature_names(self) -> frozenset[str]:
        """The store features' column names (``view:feature`` without the view)."""
        return frozenset(ref.split(":", 1)[1] for ref in self.features)

    @property
    def width(self) -> int:
        """Numbers per predicted row: the class count for multiclass, else 1."""
        return len(self.classes) if self.task == "multiclass" else 1

    def is_positive(self, labels: Any) -> np.ndarray:
        """Which of a binary model's ``labels`` are its positive class (``classes[1]``, "1" when
        unknown), as 0/1: numbers compare as numbers (``1.0`` is "1"), anything else as text."""
        y = np.asarray(labels)
        positive = self.classes[1] if len(self.classes) > 1 else "1"
        if y.dtype.kind in "biuf":
            try:
                return (y.astype(np.float64) == float(positive)).astype(np.int8)
            except ValueError:  # a class named by text, labels given as numbers: none match
                return np.zeros(len(y), np.int8)
        return (np.array([str(v) for v in y.tolist()], dtype=object) == positive).astype(np.int8)

    def to_json(self) -> str:
        """The stored form (sorted keys, schema version first)."""
        body = asdict(self)
        body["extra"] = dict(self.extra)
        return json.dumps({"schema": SCHEMA, **body}, sort_keys=True, separators=(",", ":"))

    def to_tags(self) -> dict[str, str]:
        """The MLflow model-version tags: the contract, plus readable copies for the UI."""
        return {CONTRACT_TAG: self.to_json(), "tidemark.task": self.task,
                "tidemark.features": self.feature_service or ",".join(self.features),
                "tidemark.join_keys": ",".join(self.join_keys)}

    @classmethod
    def from_json(cls, text: str) -> ModelContract:
        """Parse :meth:`to_json`'s output; :class:`ContractError` names the key that is wrong."""
        try:
            raw = json.loads(text)
        except json.JSONDecodeError as exc:
            raise ContractError(f"the model contract is not JSON ({exc}); register the version again") from None
        if not isinstance(raw, dict):
            raise ContractError("the model contract must be a JSON object")
        if raw.get("schema") != SCHEMA:
            raise ContractError(f"model contract schema {raw.get('schema')!r} is not {SCHEMA}; upgrade tidemark "
                                "or register the version again")
        return cls.from_dict({k: v for k, v in raw.items() if k != "schema"})

    @classmethod
    def from_dict(cls, raw: Mapping[str, Any]) -> ModelContract:
        """Build from plain data; unknown keys are refused, so a typo is an error, not a default."""
        known = {"features", "join_keys", "key_kinds", "inputs", "task", "routing_key", "text_columns", "classes",
                 "feature_service", "feast_project", "feast_repo", "label", "output", "extra"}
        _no_unknown(raw, known, "contract")
        for key in ("features", "join_keys", "key_kinds", "inputs", "task"):
            if key not in raw:
                raise ContractError(f"contract.{key} is missing")
        label = raw.get("label")
        extra = raw.get("extra") or {}
        if not isinstance(extra, dict):
            raise ContractError("contract.extra must be an object of strings")
        return cls(
            features=_names(raw["features"], "contract.features"), join_keys=_names(raw["join_keys"], "contract.join_keys"),
            key_kinds=_names(raw["key_kinds"], "contract.key_kinds"), inputs=_names(raw["inputs"], "contract.inputs"),
            task=cast(Task, raw["task"]), routing_key=_text(raw, "routing_key", "", "contract"),
            text_columns=_names(raw.get("text_columns", ()), "contract.text_columns"),
            classes=tuple(str(c) for c in _names(raw.get("classes", ()), "contract.classes", text=False)),
            feature_service=raw.get("feature_service") or None, feast_project=_text(raw, "feast_project", "", "contract"),
            feast_repo=_text(raw, "feast_repo", "", "contract"),
            label=None if label is None else LabelSource.from_dict(label, "contract.label"),
            output=_text(raw, "output", "prediction", "contract"), extra={str(k): str(v) for k, v in extra.items()},
        )

    @classmethod
    def of_version(cls, name: str, version: str, tags: Mapping[str, str]) -> ModelContract:
        """The contract stored on a model version (its tags); :class:`ContractMissingError` if the
        version was registered without one (by hand in MLflow, or by an older tidemark)."""
        text = tags.get(CONTRACT_TAG)
        if not text:
            raise ContractMissingError(
                f"v{version} of {name!r} has no model contract (tag {CONTRACT_TAG!r}): tidemark does not know which "
                "features it reads or what it predicts. Register it with pipelines.model_registry.register_model "
                "(or `tidemark train`), not by hand in MLflow")
        try:
            return cls.from_json(text)
        except ContractError as exc:
            raise ContractError(f"v{version} of {name!r}: {exc}") from None

    def _check(self) -> None:
        if self.task not in TASKS:
            raise ContractError(f"task {self.task!r} is not one of {', '.join(TASKS)}")
        if not self.features:
            raise ContractError("a model must read at least one feature (contract.features is empty)")
        bad = [f for f in self.features if f.count(":") != 1 or not all(f.split(":"))]
        if bad:
            raise ContractError(f"features must be 'view:feature' references; got {bad[:3]}")
        if len(self.key_kinds) != len(self.join_keys) or any(k not in KEY_KINDS for k in self.key_kinds):
            raise ContractError(f"key_kinds {list(self.key_kinds)} must give 'int' or 'str' for each join key "
                                f"{list(self.join_keys)}")
        if self.join_keys and self.routing_key not in self.join_keys:
            raise ContractError(f"routing key {self.routing_key!r} is not a join key; choose one of {list(self.join_keys)}")
        clash = sorted(set(self.join_keys) & set(self.inputs))
        if clash:
            raise ContractError(f"join keys {clash} are also model inputs; an id is not a feature: leave it out of "
                                "the inputs")
        if len(set(self.inputs)) != len(self.inputs) or not self.inputs:
            raise ContractError(f"inputs must be distinct and at least one; got {list(self.inputs)}")
        unknown_text = sorted(set(self.text_columns) - set(self.inputs))
        if unknown_text:
            raise ContractError(f"text columns {unknown_text} are not model inputs {list(self.inputs)}")
        if self.task == "multiclass" and len(self.classes) < 2:
            raise ContractError("a multiclass model needs its classes (at least two, in probability order)")
        if self.task == "binary" and self.classes and len(self.classes) != 2:
            raise ContractError(f"a binary model has two classes (negative, positive); got {list(self.classes)}")


def _no_unknown(raw: Mapping[str, Any], known: set[str], where: str) -> None:
    if not isinstance(raw, Mapping):
        raise ContractError(f"{where} must be an object, got {type(raw).__name__}")
    unknown = sorted(set(raw) - known)
    if unknown:
        raise ContractError(f"unknown key{'s' if len(unknown) > 1 else ''} {', '.join(f'{where}.{k}' for k in unknown)}; "
                            f"known: {', '.join(sorted(known))}")


def _names(value: Any, where: str, *, text: bool = True) -> tuple[str, ...]:
    if isinstance(value, str) or not isinstance(value, list | tuple):
        raise ContractError(f"{where} must be a list, got {value!r:.60}")
    if text and not all(isinstance(v, str) and v for v in value):
        raise ContractError(f"{where} must hold non-empty strings, got {list(value)!r:.80}")
    return tuple(value)


def _text(raw: Mapping[str, Any], key: str, default: str, where: str) -> str:
    value = raw.get(key, default)
    if value is None:
        return default
    if not isinstance(value, str):
        raise ContractError(f"{where}.{key} must be a string, got {value!r:.40}")
    return value
