"""Errors raised by serving and by the model it runs.

    TidemarkError
    └── ServingError
        ├── ModelFormatError   a stored model can't be read (format, weights, wrong flavour)
        └── ModelInputError    a frame to score lacks a column or has the wrong kind of values

Every message says what was wrong and what to do about it.
"""

from __future__ import annotations

from features.errors import TidemarkError

__all__ = ["ModelFormatError", "ModelInputError", "ServingError"]


class ServingError(TidemarkError):
    """Root of serving's errors."""


class ModelFormatError(ServingError):
    """A stored model is not in a form this version of tidemark can load."""


class ModelInputError(ServingError):
    """Input to a model lacks a column it needs, or holds values of the wrong kind."""
