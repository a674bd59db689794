"""`tidemark datagen|demo ARGS` run the project's own entry points, given ARGS."""

from __future__ import annotations

from pathlib import Path

import pytest

from pipelines.cli import main

PROJECT = """\
models:
  - name: m
    features: [v:f]
    task: binary
    label_source: {table: labels, label: y}
    train: examples.driver.training:fit_completion
"""


def test_a_project_without_the_command_says_so(tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
                                               capsys: pytest.CaptureFixture[str]) -> None:
    (tmp_path / "feature_store.yaml").write_text("project: p\n")
    (tmp_path / "tidemark.yaml").write_text(PROJECT)
    monkeypatch.setenv("TIDEMARK_HOME", str(tmp_path / "home"))
    assert main(["--repo", str(tmp_path), "demo", "--rows", "5"]) == 2
    assert "declares no demo entry point" in capsys.readouterr().err


def test_other_commands_refuse_unknown_options(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("TIDEMARK_HOME", str(tmp_path / "home"))
    with pytest.raises(SystemExit) as exc:
        main(["models", "--rows", "5"])
    assert exc.value.code == 2


def test_the_bundled_example_parses_its_own_options(tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
                                                    capsys: pytest.CaptureFixture[str]) -> None:
    monkeypatch.setenv("TIDEMARK_HOME", str(tmp_path / "home"))
    with pytest.raises(SystemExit) as exc:
        main(["datagen", "--help"])
    assert exc.value.code == 0 and "--scenario" in capsys.readouterr().out
