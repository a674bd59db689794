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


def test_each_row_goes_with_its_send_time_and_is_pushed_only_once_scored():
    server, pushed = _Server(503), []

    def push(rows: pd.DataFrame) -> None:
        pushed.append((len(server.bodies), rows))

    before = datetime.now(UTC)
    assert post_payments(server, PAYMENTS, batch=2, push=push) == 3
    sent = [pd.Timestamp(r["event_timestamp"]) for b in server.bodies for r in b["rows"]]
    assert all(before <= t <= datetime.now(UTC) for t in sent)
    # after the retried first batch was answered 200 (2 posts), then after the second
    assert [n for n, _ in pushed] == [2, 3]
    first = pushed[0][1]
    assert first["transaction_id"].tolist() == [1, 2] and first["amount"].tolist()[0] == 1.0
    assert first["event_timestamp"].tolist() == [pd.Timestamp(server.bodies[1]["rows"][0]["event_timestamp"])] * 2


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
