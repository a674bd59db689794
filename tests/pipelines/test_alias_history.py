"""The alias history's pure parts: the rollback rule, the description table, the entry size."""

from __future__ import annotations

import json

import pytest

from pipelines.alias_history import (
    MARKER,
    MAX_DESCRIPTION_CHARS,
    MAX_ENTRY_CHARS,
    PREFIX,
    AliasMove,
    actor,
    describe,
    rollback_target,
)


def _m(seq: int, alias: str, version: str | None, previous: str | None, action: str = "promote") -> AliasMove:
    return AliasMove(seq, f"2026-12-01T00:00:{seq:02d}+00:00", alias, version, previous, action, "user:t", "r")


def _champions(*moves: tuple[str, str | None, str]) -> list[AliasMove]:
    return [_m(i + 1, "champion", v, p, a) for i, (v, p, a) in enumerate(moves)]


def test_rollback_target_steps_back_over_rolled_back_versions():
    history = _champions(("1", None, "promote"), ("2", "1", "promote"), ("3", "2", "promote"), ("2", "3", "rollback"))
    assert rollback_target(history, "2") == "1"  # v3 was rolled back; v2 serves
    history += _champions(("1", "2", "rollback"))
    assert rollback_target(history, "1") is None  # v2 and v3 both ended in a rollback


def test_a_rolled_back_version_promoted_again_and_replaced_normally_is_healthy():
    history = _champions(("1", None, "promote"), ("2", "1", "promote"), ("1", "2", "rollback"),
                         ("2", "1", "promote"), ("3", "2", "promote"))
    assert rollback_target(history, "3") == "2"


def test_moves_of_other_aliases_and_an_empty_history_give_no_target():
    assert rollback_target([], "1") is None
    assert rollback_target([_m(1, "challenger", "2", None, "register")], "1") is None


def test_describe_keeps_the_models_text_first_and_replaces_only_its_own_table():
    history = [_m(i, "champion", str(i), str(i - 1)) for i in range(1, 31)]
    once = describe("The model's own words.", history)
    assert once.startswith("The model's own words.\n\n" + MARKER)
    rows = [line for line in once.splitlines() if line.startswith("| ") and not line.startswith("| #")]
    assert len(rows) == 20 and rows[0].startswith("| 30 |") and rows[-1].startswith("| 11 |")
    assert describe(once, history) == once  # the old table is replaced, not stacked


def test_long_reasons_stay_under_the_sql_column_limits():
    long = AliasMove(7, "2026-12-01T00:00:00+00:00", "champion", "2", "1", "rollback", "user:t", "x" * 20_000)
    text = long.to_json()
    assert len(text) <= MAX_ENTRY_CHARS and json.loads(text)["reason"].endswith("…")
    assert AliasMove.from_tag(f"{PREFIX}000007", text).version == "2"
    many = [AliasMove(i, long.at, "champion", str(i), None, "promote", "user:" + "u" * 300, "y" * 300)
            for i in range(1, 40)]
    assert len(describe("d" * 1_000, many)) <= MAX_DESCRIPTION_CHARS


def test_the_actor_is_the_airflow_task_inside_airflow(monkeypatch: pytest.MonkeyPatch):
    for key in ("DAG_ID", "DAG_RUN_ID", "TASK_ID"):
        monkeypatch.delenv(f"AIRFLOW_CTX_{key}", raising=False)
    assert actor().startswith("user:")
    monkeypatch.setenv("AIRFLOW_CTX_DAG_ID", "canary_rollout")
    monkeypatch.setenv("AIRFLOW_CTX_DAG_RUN_ID", "scheduled__2026-12-01T00:05:00+00:00")
    monkeypatch.setenv("AIRFLOW_CTX_TASK_ID", "step")
    assert actor() == "airflow:canary_rollout/scheduled__2026-12-01T00:05:00+00:00/step"
