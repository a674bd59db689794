"""Posting generated payments: transient 503s are retried after Retry-After, other failures raise."""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from typing import Any

import pandas as pd
import pytest

from examples.fraud.replay import ReplayError, drift_hour, post_payments


@dataclass
class _Answer:
    status_code: int
    text: str = ""
    headers: dict[str, str] = field(default_factory=lambda: {"retry-after": "0"})


class _Server:
    """Answers from a script, then 200s; records every body posted."""

    def __init__(self, *codes: int) -> None:
        self.codes, self.bodies = list(codes), []

    def post(self, url: str, *, json: Any) -> _Answer:
        assert url == "/v1/predict"
        self.bodies.append(json)
        return _Answer(self.codes.pop(0) if self.codes else 200, "why")


PAYMENTS = pd.DataFrame({"transaction_id": [1, 2, 3], "customer_id": [1, 2, 3], "merchant_id": [5, 5, 5],
                         "amount": [1.0, None, 3.0], "channel": ["pos", "ecom", "pos"]})


def test_a_transient_503_is_retried_and_every_payment_is_posted_once_scored():
    server = _Server(503, 503)
    assert post_payments(server, PAYMENTS, batch=2) == 3
    assert [len(b["rows"]) for b in server.bodies] == [2, 2, 2, 1]  # the first batch thrice, then the rest
    assert server.bodies[0] == server.bodies[2] and server.bodies[0]["rows"][1]["amount"] is None


def test_a_503_that_persists_raises_after_the_retries():
    server = _Server(*[503] * 10)
    with pytest.raises(ReplayError, match="answered 503 after 2 retries: why"):
        post_payments(server, PAYMENTS, retries=2)
    assert len(server.bodies) == 3


def test_other_failures_are_not_retried():
    server = _Server(422)
    with pytest.raises(ReplayError, match="answered 422: why"):
        post_payments(server, PAYMENTS)
    assert len(server.bodies) == 1


def test_drift_hour_is_the_end_of_the_drift_interval_that_holds_now():
    before = datetime.now(UTC)
    hour = drift_hour(settle=timedelta(0))  # no settling: never waits
    after = datetime.now(UTC)
    assert (hour.minute, hour.second, hour.microsecond) == (15, 0, 0)
    assert hour - timedelta(hours=1) <= before and after < hour
