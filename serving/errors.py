"""Errors raised by serving and by the model it runs.

    TidemarkError
    └── ServingError
        ├── ModelFormatError   a stored model can't be read (format, weights, wrong flavour)
        ├── ContractError      a model contract is malformed or doesn't fit its model
        │   └── ContractMissingError   a model version was registered without a contract
        ├── NotReadyError      no champion loaded (or it failed): the server answers 503
        ├── OverloadedError    the model's batch queue is full: the server answers 503
        ├── ModelInputError    a frame to score lacks a column or has the wrong kind of values
        ├── CanaryStateError   a canary state is malformed, or Redis failed a write of it
        │   └── CanaryConflictError   another writer changed the state since it was read
        └── PredictionLogError        a batch for the prediction log is malformed
            └── PredictionLogWriteError   pending rows could not be written (kept, retried)

Every message says what was wrong and what to do about it.
"""

from __future__ import annotations

from tidemark.errors import TidemarkError

__all__ = ["CanaryConflictError", "CanaryStateError", "ContractError", "ContractMissingError", "ModelFormatError", "ModelInputError", "NotReadyError",
           "OverloadedError",
           "PredictionLogError", "PredictionLogWriteError", "ServingError"]


class ServingError(TidemarkError):
    """Root of serving's errors."""


class ModelFormatError(ServingError):
    """A stored model is not in a form this version of tidemark can load."""


class ContractError(ServingError):
    """A model contract is malformed, or doesn't fit the model or the feature repo it names."""


class ContractMissingError(ContractError):
    """A model version carries no contract (registered by hand in MLflow, or by an older tidemark)."""


class ModelInputError(ServingError):
    """Input to a model lacks a column it needs, or holds values of the wrong kind."""


class CanaryStateError(ServingError):
    """A canary state is malformed (stored or built), or Redis failed to store one."""


class CanaryConflictError(CanaryStateError):
    """A compare-and-set write lost: the stored revision is not the one the writer read."""

    def __init__(self, model: str, expected_revision: int, stored_revision: int) -> None:
        super().__init__(
            f"canary state of {model!r} changed since it was read: expected revision {expected_revision}, "
            f"stored revision {stored_revision}. Another controller wrote it; read it again and decide again "
            "(run one canary controller per model)."
        )
        self.model = model
        self.expected_revision = expected_revision
        self.stored_revision = stored_revision


class NotReadyError(ServingError):
    """The server can't answer yet: no champion is loaded, or the champion failed to score."""


class PredictionLogError(ServingError):
    """A batch handed to the prediction log is malformed; the message says how."""


class PredictionLogWriteError(PredictionLogError):
    """``PredictionLog.flush`` could not write the pending rows; they are kept and retried."""


class OverloadedError(ServingError):
    """Too much work is queued for a model; the request is refused rather than delayed."""
