"""Errors raised by training and by the model registry.

    TidemarkError
    ├── TrainingError                a model can't be trained from this data; nothing is registered
    │   ├── NoLabelsError            no transaction in the window has a label known by the cutoff
    │   ├── ImmatureLabelsError      too few payments in the window have their label yet (biased)
    │   ├── EmptyFrameError          the training frame (or one of its time splits) has no rows
    │   └── SingleClassError         a split holds only fraud or only legitimate payments
    ├── ProjectError                 tidemark.yaml is malformed, or names what does not exist
    └── RegistryError                the MLflow registry refused an operation, or it would be unsafe
        ├── NoChampionError          the model has no champion (promote the first with --first)
        ├── GateError                a challenger has not passed the evaluation gate
        └── ModelVersionError        a version or alias does not exist

Every message says what was wrong and what to do about it.
"""

from __future__ import annotations

from tidemark.errors import TidemarkError

__all__ = ["EmptyFrameError", "GateError", "ImmatureLabelsError", "ModelVersionError", "NoChampionError", "NoLabelsError",
           "ProjectError", "RegistryError", "SingleClassError", "TrainingError"]


class ProjectError(TidemarkError):
    """A project file (``tidemark.yaml``) is malformed, or names a model, key or entry point that
    does not exist; the message names the file, the line and the key."""


class TrainingError(TidemarkError):
    """A model can't be trained from the data given; no model version was registered."""


class NoLabelsError(TrainingError):
    """No transaction in the training window has a fraud label known by the label cutoff."""


class ImmatureLabelsError(TrainingError):
    """Too few payments in the window have a label yet: the known ones are biased to fraud."""


class EmptyFrameError(TrainingError):
    """The training frame, or one of its time-based splits, has no rows."""


class SingleClassError(TrainingError):
    """A split has only one class of label, so nothing can be learned or measured."""


class RegistryError(TidemarkError):
    """The MLflow model registry refused an operation, or the operation would be unsafe."""


class NoChampionError(RegistryError):
    """The registered model has no ``champion`` alias yet."""


class GateError(RegistryError):
    """A challenger has not passed the evaluation gate against the current champion."""


class ModelVersionError(RegistryError):
    """A model version or alias that an operation needs does not exist."""
