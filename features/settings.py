"""Moved to :mod:`tidemark.settings` (the shared kernel, below every package); this name keeps working."""

from __future__ import annotations

from tidemark.settings import BUNDLED_PROJECT, Settings, SparkSettings

__all__ = ["BUNDLED_PROJECT", "Settings", "SparkSettings"]
