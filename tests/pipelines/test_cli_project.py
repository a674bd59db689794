"""`tidemark datagen|demo ARGS` run the project's own entry points, given ARGS."""

from __future__ import annotations

from pathlib import Path

import pytest

from pipelines.cli import main


def test_a_project_without_the_command_says_so(minimal_project: Path, monkeypatch: pytest.MonkeyPatch,
                                               capsys: pytest.CaptureFixture[str]) -> None:
    monkeypatch.setenv("TIDEMARK_HOME", str(minimal_project / "home"))
    assert main(["--repo", str(minimal_project), "demo", "--rows", "5"]) == 2
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


def test_version_names_the_installed_distribution(capsys: pytest.CaptureFixture[str]):
    from importlib.metadata import version

    with pytest.raises(SystemExit) as exit_info:
        main(["--version"])
    assert exit_info.value.code == 0
    assert capsys.readouterr().out.strip() == f"tidemark {version('tidemark')}"
