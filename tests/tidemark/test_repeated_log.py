"""RepeatedLog: the first line of a kind, then one per interval with the count held back."""

from __future__ import annotations

import logging

import pytest

from tidemark.repeated_log import RepeatedLog


class Clock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


def test_a_repeated_line_is_written_once_a_minute_with_the_count_it_held_back(
        caplog: pytest.LogCaptureFixture) -> None:
    clock = Clock()
    lines = RepeatedLog(logging.getLogger("test.repeated"), every_s=60.0, clock=clock)
    with caplog.at_level(logging.WARNING, "test.repeated"):
        written = [lines.log(logging.WARNING, "bad_event", "push failed: %s", f"row {i}") for i in range(500)]
        clock.now += 59.0
        written.append(lines.log(logging.WARNING, "bad_event", "push failed: %s", "row 500"))
        clock.now += 1.0
        written.append(lines.log(logging.WARNING, "bad_event", "push failed: %s", "row 501"))
        written.append(lines.log(logging.ERROR, "store_error", "store: %s", "down"))  # another kind: its own line
    assert written.count(True) == 3 and written[0] and written[-2] and written[-1]
    assert [r.getMessage() for r in caplog.records] == [
        "push failed: row 0", "push failed: row 501 (500 more like it in the last 60 s)", "store: down"]
    assert [r.levelno for r in caplog.records] == [logging.WARNING, logging.WARNING, logging.ERROR]


def test_a_percent_sign_in_an_argument_is_not_a_format(caplog: pytest.LogCaptureFixture) -> None:
    lines = RepeatedLog(logging.getLogger("test.repeated"), every_s=0.0)
    with caplog.at_level(logging.WARNING, "test.repeated"):
        lines.log(logging.WARNING, "k", "why: %s", "100% bad")
        lines.log(logging.WARNING, "k", "why: %s", "50% bad")
    assert [r.getMessage() for r in caplog.records] == ["why: 100% bad", "why: 50% bad"]


def test_the_exception_being_handled_goes_with_the_line(caplog: pytest.LogCaptureFixture) -> None:
    lines = RepeatedLog(logging.getLogger("test.repeated"))
    with caplog.at_level(logging.ERROR, "test.repeated"):
        try:
            raise RuntimeError("boom")
        except RuntimeError:
            lines.log(logging.ERROR, "internal", "failed", exc_info=True)
    assert caplog.records[0].exc_info is not None and "boom" in caplog.text
