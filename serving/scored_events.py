"""The push of every scored request of a model whose project declares ``push_scored_events: <push
source>``: the entity's next request sees the event (read after write).

    POST /v1/models/{m}/predict ──► read features ──► score ──► ScoredEvents.push ──► EventPusher
                                                                    │ then the response,
                                                                    ▼ with "pushed": true | false

A scored request is pushed after its features were read (its own event is not in its own
features) and before its response is sent. Its rows go as the client sent them (join keys, request
fields and any other field: an event id, an event time); a row without the views' event time gets
the request's receive time (UTC). A failed push never fails the prediction: the response says
``"pushed": false``, and the failure is logged and counted by reason
(``tidemark_push_errors_total{model,reason}``, reasons in :data:`PUSH_ERROR_REASONS`).
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import pandas as pd

from features.errors import EventError, OnlineStoreError, OnlineStoreUnavailable
from features.redaction import redact
from serving.event_push import EventSink

__all__ = ["PUSH_ERROR_REASONS", "ScoredEvents"]

log = logging.getLogger(__name__)

#: ``reason`` label values of ``tidemark_push_errors_total``.
PUSH_ERROR_REASONS = ("bad_event", "store_unavailable", "store_error", "internal")


@dataclass
class ScoredEvents:
    """Pushes one model's scored rows to its ``push_source`` (see the module docstring)."""

    model: str
    push_source: str
    pusher: EventSink
    on_error: Callable[[str, str], None] | None = None  # (model, reason): the metrics counter

    def __post_init__(self) -> None:
        # raises UnknownPushSourceError now, at server start, rather than on every request
        views = self.pusher.views_of(self.push_source)
        self.timestamp_fields = tuple(dict.fromkeys(v.stream.timestamp_field for v in views if v.stream is not None))

    def push(self, rows: Sequence[Mapping[str, Any]], received_us: int) -> bool:
        """Push ``rows`` (a validated request's row objects); a row without an event time gets
        ``received_us`` (µs since the epoch, UTC). True when stored (a replay counts as stored);
        False when the push failed, which is logged and counted, never raised."""
        received = pd.Timestamp(received_us, unit="us", tz="UTC")  # a time, whatever the other rows send
        events = [self._timed(row, received) for row in rows]
        try:
            self.pusher.push(self.push_source, events)
            return True
        except EventError as exc:
            reason = "bad_event"
            log.warning("scored events of %s not pushed to %s: %s", self.model, self.push_source, exc)
        except OnlineStoreUnavailable as exc:
            reason = "store_unavailable"
            log.warning("scored events of %s not pushed to %s: %s", self.model, self.push_source, redact(str(exc)))
        except OnlineStoreError as exc:
            reason = "store_error"
            log.error("scored events of %s not pushed to %s: %s", self.model, self.push_source, redact(str(exc)))
        except Exception:  # a push must never fail a prediction that was made
            reason = "internal"
            log.exception("scored events of %s not pushed to %s", self.model, self.push_source)
        if self.on_error is not None:
            self.on_error(self.model, reason)
        return False

    def _timed(self, row: Mapping[str, Any], received: pd.Timestamp) -> Mapping[str, Any]:
        missing = [f for f in self.timestamp_fields if row.get(f) is None]
        return {**row, **dict.fromkeys(missing, received)} if missing else row
