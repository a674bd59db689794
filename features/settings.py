"""Moved to :mod:`tidemark.settings` (the shared kernel, below every package); this name keeps working."""

from __future__ import annotations

from tidemark.settings import Settings, SparkSettings

__all__ = ["Settings", "SparkSettings"]
