"""Traffic for the demo and the end-to-end tests: generated payments, posted to a scoring server.

The generated data runs past "now"; the payments after now are what the server would be asked
next. Posting them now (each request sees its customer's features as of now, as a live request
would, and not itself) is live traffic without a client fleet.

Each payment is sent as made at the moment of its request: its ``event_timestamp`` is the send
time (the generated one lies hours ahead), beside its ``transaction_id``, which is what a scored
payment needs to be pushed into the customer's windows (``push_scored_events``). A replay
against a server that does not push passes ``push`` (e.g. ``FeatureClient.push`` of the
``transactions`` source): each batch is pushed once it is scored, as a server would, so the
windows of the next requests are as fresh as in production.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable, Sequence
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import TYPE_CHECKING, Any, Protocol

import pandas as pd
import pyarrow.dataset as ds

from examples.fraud.feature_views import PUSH_SOURCE

if TYPE_CHECKING:
    from tidemark.settings import Settings

log = logging.getLogger(__name__)

__all__ = ["REQUEST_COLUMNS", "ReplayError", "drift_hour", "feature_push", "payments_between", "post_payments",
           "recorded_payments", "upcoming_payments"]

#: What a client sends per payment: the join keys, the request fields and the payment's id.
REQUEST_COLUMNS = ("transaction_id", "customer_id", "merchant_id", "amount", "channel")
EVENT_TIME = "event_timestamp"  # set on each row when it is sent: when the payment was made


class ReplayError(RuntimeError):
    """The traffic can't be made or posted; the message says what was missing."""


class _Poster(Protocol):  # an httpx.Client, or Starlette's TestClient
    def post(self, url: str, *, json: Any) -> Any: ...


def payments_between(raw_dir: Path, start: datetime, end: datetime,
                     columns: Sequence[str] = REQUEST_COLUMNS) -> pd.DataFrame:
    """Generated payments made in ``[start, end)`` (UTC), in time order (``columns``; with
    ``event_timestamp`` among them, each payment's own time comes along)."""
    days = pd.date_range(pd.Timestamp(start).normalize(), pd.Timestamp(end), freq="D")
    files = [str(f) for d in days for f in sorted((raw_dir / "transactions" / f"date={d.date()}").glob("*.parquet"))]
    if not files:
        return pd.DataFrame(columns=list(columns))
    when = ds.field("event_timestamp")
    table = ds.dataset(files, format="parquet").to_table(
        columns=list(dict.fromkeys([*columns, "event_timestamp"])), filter=(when >= start) & (when < end))
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


def recorded_payments(raw_dir: Path, now: datetime, *, at_least: int,
                      hours: Sequence[int] = (6, 9, 12, 18, 24)) -> pd.DataFrame:
    """The payments of the hours before ``now`` (6, or more until there are ``at_least``), each
    with its own ``event_timestamp``: recorded traffic, for a server that replays it
    (``tidemark serve --replay`` reads each payment's features as of its time)."""
    found = 0
    for h in hours:
        frame = payments_between(raw_dir, now - timedelta(hours=h), now, (*REQUEST_COLUMNS, EVENT_TIME))
        found = len(frame)
        if found >= at_least:
            return frame
    raise ReplayError(f"only {found} generated payments in the {hours[-1]} h before {now:%Y-%m-%d %H:%M} UTC "
                      f"(need {at_least}); generate more data")


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
                  pause_s: float = 0.0, push: Callable[[pd.DataFrame], object] | None = None) -> int:
    """POST ``payments`` to ``/v1/predict``, ``batch`` per request; returns the rows scored.

    Each row goes with ``event_timestamp`` = the time its request is sent (UTC, ISO 8601), unless
    ``payments`` carry their own (recorded traffic: :func:`recorded_payments`).
    ``push``: called with each batch once it was scored (its rows, ``event_timestamp`` a UTC
    timestamp), as a server with ``push_scored_events`` pushes them: never before the scoring, so
    a payment is not in its own windows.

    A 503 (the server's answer when an online read timed out or a model is not ready) is retried
    after its ``Retry-After``, as a payment client would, at most ``retries`` times per request;
    any other answer that is not 200, or a 503 that persists, raises :class:`ReplayError`.
    ``pause_s`` spaces the requests (payments arrive spread out, not back to back)."""
    records = payments.astype(object).where(payments.notna(), None).to_dict("records")
    for i in range(0, len(records), batch):
        sent = datetime.now(UTC)
        rows = [{**r, EVENT_TIME: _iso(r.get(EVENT_TIME)) or sent.isoformat()} for r in records[i:i + batch]]
        for attempt in range(retries + 1):
            answer = http.post("/v1/predict", json={"rows": rows})
            if answer.status_code != 503 or attempt == retries:
                break
            wait = _retry_after(answer)
            log.warning("/v1/predict answered 503 (%s); retrying in %.1f s", answer.text[:200], wait)
            time.sleep(wait)
        if answer.status_code != 200:
            raise ReplayError(f"/v1/predict answered {answer.status_code}"
                              f"{f' after {retries} retries' if answer.status_code == 503 else ''}: {answer.text[:300]}")
        if push is not None:
            chunk = payments.iloc[i:i + batch]
            push(chunk if EVENT_TIME in chunk else chunk.assign(**{EVENT_TIME: pd.Timestamp(sent)}))
        if pause_s:
            time.sleep(pause_s)
    return len(records)


def _iso(moment: Any) -> str | None:
    return None if moment is None else pd.Timestamp(moment).isoformat()


def feature_push(settings: Settings, source: str = PUSH_SOURCE) -> Callable[[pd.DataFrame], object]:
    """:func:`post_payments`' ``push`` for a server that does not push the payments it scored:
    ``FeatureClient.push`` of ``source`` (the customer windows' ``transactions``) on ``settings``."""
    from features.sdk import FeatureClient

    client = FeatureClient(settings)
    return lambda rows: client.push(source, rows)


def _retry_after(answer: Any, longest: float = 5.0) -> float:
    """The answer's ``Retry-After`` in seconds (1 when absent or not a number), at most ``longest``."""
    try:
        return min(max(float(answer.headers.get("retry-after", 1)), 0.0), longest)
    except (TypeError, ValueError):
        return 1.0
