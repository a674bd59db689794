"""The root of every error tidemark raises on purpose, and the one error of the shared kernel.

    TidemarkError                         every package's errors.py roots its tree here
    └── ConfigError                       a setting is missing or has an invalid value
        └── features.errors.ConfigError   …of the feature store (also a FeatureStoreError)

Each package keeps its own tree under :class:`TidemarkError` (``features.errors``,
``monitoring.errors``, ``serving.errors``, ``pipelines.errors``). Every message says what was
wrong and what to do about it.
"""

from __future__ import annotations

__all__ = ["ConfigError", "TidemarkError"]


class TidemarkError(Exception):
    """Root of every error tidemark raises on purpose."""


class ConfigError(TidemarkError):
    """A setting is missing or has an invalid value (``TIDEMARK_*`` variables read by
    :meth:`tidemark.settings.Settings.from_env`, or a component's configuration)."""
