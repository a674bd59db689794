"""Corrupt values read: every read counted, each key logged once, a summary past the bound."""

from __future__ import annotations

import logging

import pytest

from features.corrupt_values import CorruptValueReport
from features.errors import CorruptValueError


def test_each_key_is_logged_once_and_every_read_counted(caplog: pytest.LogCaptureFixture) -> None:
    report = CorruptValueReport(max_keys=2, summary_every_s=0.0)
    bad = [CorruptValueError(b"tm:{id=1}:v", "checksum mismatch"), CorruptValueError(b"tm:{id=2}:v", "short")]
    with caplog.at_level(logging.ERROR, logger="features.corrupt_values"):
        report.record(bad)
        report.record(bad[:1])
        report.record([CorruptValueError(b"tm:{id=3}:v", "magic")])  # past max_keys: a summary instead
    assert report.count == 4
    lines = [r.getMessage() for r in caplog.records]
    assert sum("id=1" in line for line in lines) == 1 and sum("id=2" in line for line in lines) == 1
    assert "reads as missing" in lines[0] and "materialize again" in lines[0]
    assert "1 more corrupt online values" in lines[-1] and "id=3" not in lines[-1]
