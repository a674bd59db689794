"""The model contract: stored as plain JSON on a model version, read back whole or refused by name."""

from __future__ import annotations

import json

import pytest

from serving.errors import ContractError, ContractMissingError
from serving.model_contract import CONTRACT_TAG, LabelSource, ModelContract


def _contract(**changes: object) -> ModelContract:
    fields: dict[str, object] = {
        "features": ("driver_hourly_stats:conv_rate", "driver_hourly_stats:avg_daily_trips"),
        "join_keys": ("driver_id",), "key_kinds": ("int",), "inputs": ("conv_rate", "avg_daily_trips", "hour"),
        "task": "binary", "classes": ("0", "1"),
        "label": LabelSource("labels/", "completed", ("ride_id",), "event_timestamp", "label_timestamp")}
    fields.update(changes)
    return ModelContract(**fields)  # type: ignore[arg-type]


def test_round_trip_through_the_version_tags() -> None:
    contract = _contract(feature_service="driver_activity", extra={"entry_point": "m:fit"})
    tags = contract.to_tags()
    assert ModelContract.of_version("m", "3", tags) == contract
    assert tags["tidemark.task"] == "binary" and tags["tidemark.features"] == "driver_activity"
    raw = json.loads(tags[CONTRACT_TAG])  # a reader needs only json: no tidemark type inside
    assert raw["schema"] == 1 and raw["join_keys"] == ["driver_id"] and raw["label"]["label"] == "completed"


def test_what_follows_from_the_contract() -> None:
    contract = _contract()
    assert contract.routing_key == "driver_id"  # default: the first join key
    assert contract.request_columns == ("hour",)
    assert contract.width == 1
    assert _contract(task="multiclass", classes=("a", "b", "c")).width == 3


def test_a_version_without_a_contract_says_how_to_register() -> None:
    with pytest.raises(ContractMissingError, match="v7 of 'team-model' has no model contract.*register_model"):
        ModelContract.of_version("team-model", "7", {"mlflow.source": "by hand"})


@pytest.mark.parametrize(("change", "message"), [
    ({"task": "ranking"}, "task 'ranking' is not one of binary, multiclass, regression"),
    ({"features": ("conv_rate",)}, "'view:feature' references"),
    ({"features": ()}, "at least one feature"),
    ({"key_kinds": ("float",)}, "'int' or 'str'"),
    ({"routing_key": "rider_id"}, "routing key 'rider_id' is not a join key"),
    ({"inputs": ("driver_id", "conv_rate")}, r"join keys \['driver_id'\] are also model inputs"),
    ({"text_columns": ("city",)}, r"text columns \['city'\] are not model inputs"),
    ({"task": "multiclass", "classes": ("a",)}, "at least two"),
    ({"classes": ("a", "b", "c")}, "two classes"),
])
def test_a_malformed_contract_is_refused_naming_what_is_wrong(change: dict[str, object], message: str) -> None:
    with pytest.raises(ContractError, match=message):
        _contract(**change)


def test_a_stored_contract_with_a_typo_names_the_key() -> None:
    raw = json.loads(_contract().to_json())
    raw["lable"] = raw.pop("label")
    with pytest.raises(ContractError, match=r"v2 of 'm': unknown key contract\.lable"):
        ModelContract.of_version("m", "2", {CONTRACT_TAG: json.dumps(raw)})
    raw = json.loads(_contract().to_json())
    del raw["inputs"]
    with pytest.raises(ContractError, match=r"contract\.inputs is missing"):
        ModelContract.from_json(json.dumps(raw))
    with pytest.raises(ContractError, match="schema 9"):
        ModelContract.from_json(json.dumps({**json.loads(_contract().to_json()), "schema": 9}))
    with pytest.raises(ContractError, match="not JSON"):
        ModelContract.from_json("{broken")


def test_a_label_source_needs_a_table_and_a_label() -> None:
    assert LabelSource.from_dict({"table": "t", "label": "y"}).known_at == "label_timestamp"
    with pytest.raises(ContractError, match=r"label_source\.label is required"):
        LabelSource.from_dict({"table": "t"})
    with pytest.raises(ContractError, match=r"unknown key label_source\.colum"):
        LabelSource.from_dict({"table": "t", "label": "y", "colum": "x"})


def test_the_positive_class_is_read_one_way_for_every_label_type() -> None:
    numeric = _contract(classes=("0", "1"))
    assert numeric.is_positive([0, 1, 1]).tolist() == [0, 1, 1]
    assert numeric.is_positive([0.0, 1.0, float("nan")]).tolist() == [0, 1, 0]
    assert numeric.is_positive(["0", "1"]).tolist() == [0, 1]
    named = _contract(classes=("kept", "churned"))
    assert named.is_positive(["churned", "kept", None]).tolist() == [1, 0, 0]
    assert named.is_positive([1, 0]).tolist() == [0, 0]  # numbers never match a class named by text
