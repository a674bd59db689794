"""Fixtures of the pipelines' unit tests."""

from __future__ import annotations

from pathlib import Path

import pytest

MINIMAL_PROJECT = """\
models:
  - name: m
    features: [v:f]
    task: binary
    label_source: {table: labels, label: y}
    train: examples.driver.training:fit_completion
"""


@pytest.fixture
def minimal_project(tmp_path: Path) -> Path:
    """A project folder with one model and none of the optional hooks (feature jobs, datagen, demo)."""
    (tmp_path / "feature_store.yaml").write_text("project: p\n")
    (tmp_path / "tidemark.yaml").write_text(MINIMAL_PROJECT)
    return tmp_path
