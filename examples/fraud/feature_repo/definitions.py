"""Feast definitions for the ``feast`` CLI (``feast -c examples/fraud/feature_repo apply``).

The ``feast`` CLI imports this file and collects module-level Feast objects; the locations come
from ``TIDEMARK_HOME`` like every other tidemark entry point.
"""

from __future__ import annotations

from features.feature_views import feature_definitions
from features.settings import Settings

for _obj in feature_definitions(Settings.from_env().offline_dir):
    globals()[_obj.name] = _obj
