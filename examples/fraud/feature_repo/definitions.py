"""Feast definitions of the fraud example (``feast -c examples/fraud/feature_repo apply``).

The ``feast`` CLI imports this file and collects module-level Feast objects; the locations come
from ``TIDEMARK_HOME`` like every other tidemark entry point. tidemark itself calls
:func:`tidemark_definitions` with its settings (``features.sdk.repo_objects``), so a client on
another home reads that home's tables.
"""

from __future__ import annotations

from typing import Any

from examples.fraud.feature_views import feature_definitions
from tidemark.settings import Settings


def tidemark_definitions(settings: Settings) -> list[Any]:
    """The example's Feast objects, reading the raw payments and offline tables under ``settings.raw_dir`` and ``settings.offline_dir``."""
    return feature_definitions(settings.offline_dir, settings.raw_dir)


for _obj in tidemark_definitions(Settings.from_env()):
    globals()[_obj.name] = _obj
