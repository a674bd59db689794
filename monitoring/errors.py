"""Errors raised by drift monitoring.

    TidemarkError
    └── MonitoringError
        ├── ProfileError        a reference profile cannot be built, read or used
        └── DriftInputError     the current data cannot be compared (empty, wrong types)

Every message says what was wrong and what to do about it.
"""

from __future__ import annotations

from tidemark.errors import TidemarkError

__all__ = ["DriftInputError", "MonitoringError", "ProfileError"]


class MonitoringError(TidemarkError):
    """Root of drift monitoring's errors."""


class ProfileError(MonitoringError):
    """A reference profile cannot be built, read or used."""


class DriftInputError(MonitoringError):
    """The current data cannot be compared with the profile."""
