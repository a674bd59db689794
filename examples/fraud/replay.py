"""Traffic for the demo and the end-to-end tests: generated payments, posted to a scoring server.

The generated data runs past "now"; the payments after now are what the server would be asked
next. Posting them now (each request sees its customer's features as of now, as a live request
would, and not itself) is live traffic without a client fleet.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Sequence
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any, Protocol

import pandas as pd
import pyarrow.dataset as ds

log = logging.getLogger(__name__)

__all__ = ["REQUEST_COLUMNS", "ReplayError", "drift_hour", "payments_between", "post_payments",
           "upcoming_payments"]

#: What a client sends per payment: the join keys, the request fields and the payment's id.
REQUEST_COLUMNS = ("transaction_id", "customer_id", "merchant_id", "amount", "channel")


class ReplayError(RuntimeError):
    """The traffic can't be made or posted; the message says what was missing."""


class _Poster(Protocol):  # an httpx.Client, or Starlette's TestClient
    def post(self, url: str, *, json: Any) -> Any: ...


def payments_between(raw_dir: Path, start: datetime, end: datetime,
                     columns: Sequence[str] = REQUEST_COLUMNS) -> pd.DataFrame:
    """Generated payments made in ``[start, end)`` (UTC), in time order."""
    days = pd.date_range(pd.Timestamp(start).normalize(), pd.Timestamp(end), freq="D")
    files = [str(f) for d in days for f in sorted((raw_dir / "transactions" / f"date={d.date()}").glob("*.parquet"))]
    if not files:
        return pd.DataFrame(columns=list(columns))
    when = ds.field("event_timestamp")
    table = ds.dataset(files, format="parquet").to_table(
        columns=[*columns, "event_timestamp"], filter=(when >= start) & (when < end))
    return table.to_pandas().sort_values("event_timestamp", kind="stable")[list(columns)].reset_index(drop=True)


def upcoming_payments(raw_dir: Path, now: datetime, *, at_least: int,
                      hours: Sequence[int] = (6, 9, 12, 18, 24)) -> pd.DataFrame:
    """The payments of the hours after ``now`` (6, or more until there are ``at_least``)."""
    found = 0
    for h in hours:
        frame = payments_between(raw_dir, now, now + timedelta(hours=h))
        found = len(frame)
        if found >= at_least:
            return frame
    raise ReplayError(f"only {found} generated payments in the {hours[-1]} h after {now:%Y-%m-%d %H:%M} UTC "
                      f"(need {at_least}); generate data that runs past now (`tidemark generate` ends tomorrow)")


def drift_hour(settle: timedelta = timedelta(minutes=3)) -> datetime:
    """The logical date of the hourly ``drift_monitor`` run (its interval runs from :15 to :15)
    whose interval holds now. Within ``settle`` of the next :15 it first waits that tick out, so
    that traffic posted over the next minutes and the run that judges it fall in one interval."""
    now = datetime.now(UTC)
    tick = now.replace(minute=15, second=0, microsecond=0)
    if timedelta(0) <= tick - now < settle:
        time.sleep((tick - now).total_seconds() + 1)
        now = datetime.now(UTC)
    return tick + timedelta(hours=1) if now >= tick else tick


def post_payments(http: _Poster, payments: pd.DataFrame, *, batch: int = 50, retries: int = 3,
                  pause_s: float = 0.0) -> int:
    """POST ``payments`` to ``/v1/predict``, ``batch`` per request; returns the rows scored.

    A 503 (the server's answer when an online read timed out or a model is not ready) is retried
    after its ``Retry-After``, as a payment client would, at most ``retries`` times per request;
    any other answer that is not 200, or a 503 that persists, raises :class:`ReplayError`.
    ``pause_s`` spaces the requests (payments arrive spread out, not back to back)."""
    records = payments.astype(object).where(payments.notna(), None).to_dict("records")
    for i in range(0, len(records), batch):
        for attempt in range(retries + 1):
            answer = http.post("/v1/predict", json={"rows": records[i:i + batch]})
            if answer.status_code != 503 or attempt == retries:
                break
            wait = _retry_after(answer)
            log.warning("/v1/predict answered 503 (%s); retrying in %.1f s", answer.text[:200], wait)
            time.sleep(wait)
        if answer.status_code != 200:
            raise ReplayError(f"/v1/predict answered {answer.status_code}"
                              f"{f' after {retries} retries' if answer.status_code == 503 else ''}: {answer.text[:300]}")
        if pause_s:
            time.sleep(pause_s)
    return len(records)


def _retry_after(answer: Any, longest: float = 5.0) -> float:
    """The answer's ``Retry-After`` in seconds (1 when absent or not a number), at most ``longest``."""
    try:
        return min(max(float(answer.headers.get("retry-after", 1)), 0.0), longest)
    except (TypeError, ValueError):
        return 1.0
