"""The feature pipeline's project hooks: a project without feature jobs builds nothing."""

from __future__ import annotations

from datetime import UTC, datetime
from pathlib import Path

from pipelines.feature_pipeline import build_interval
from tidemark.settings import Settings, SparkSettings

PROJECT = """\
models:
  - name: m
    features: [v:f]
    task: binary
    label_source: {table: labels, label: y}
    train: examples.driver.training:fit_completion
"""


def test_a_project_without_a_build_job_builds_nothing(tmp_path: Path) -> None:
    (tmp_path / "feature_store.yaml").write_text("project: p\n")
    (tmp_path / "tidemark.yaml").write_text(PROJECT)
    settings = Settings(home=tmp_path / "home", spark=SparkSettings(), feast_repo=tmp_path)
    assert build_interval(settings, datetime(2026, 1, 2, tzinfo=UTC), datetime(2026, 1, 3, tzinfo=UTC)) is None
