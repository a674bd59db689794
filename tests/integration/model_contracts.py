"""Model contracts for the small fraud models that integration tests log by hand."""

from __future__ import annotations

from collections.abc import Sequence

from examples.fraud.model import ModelSpec
from serving.model_contract import LabelSource, ModelContract


def fraud_contract_tags(spec: ModelSpec, features: Sequence[str],
                        join_keys: Sequence[str] = ("customer_id", "merchant_id"), labels: str = "labels") -> dict[str, str]:
    """The version tags that say what a hand-logged fraud model reads and predicts (its labels:
    the fraud example's labels table at ``labels``)."""
    return ModelContract(features=tuple(features), join_keys=tuple(join_keys), key_kinds=("int",) * len(join_keys),
                         inputs=tuple(spec.columns), task="binary", classes=("0", "1"),
                         text_columns=tuple(c.name for c in spec.categorical),
                         label=LabelSource(labels, "is_fraud", ("transaction_id",), "transaction_timestamp")).to_tags()
