"""The feature pipeline's project hooks: a project without feature jobs builds nothing."""

from __future__ import annotations

from datetime import UTC, datetime
from pathlib import Path

from pipelines.feature_pipeline import build_interval
from tidemark.settings import Settings, SparkSettings


def test_a_project_without_a_build_job_builds_nothing(minimal_project: Path) -> None:
    settings = Settings(home=minimal_project / "home", spark=SparkSettings(), feast_repo=minimal_project)
    assert build_interval(settings, datetime(2026, 1, 2, tzinfo=UTC), datetime(2026, 1, 3, tzinfo=UTC)) is None
