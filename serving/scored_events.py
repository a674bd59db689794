"""The push of every scored request of a model whose project declares ``push_scored_events: <push
source>``: the entity's next request sees the event (read after write).

    POST /v1/models/{m}/predict ──► read features ──► score ──► ScoredEvents.push ──► EventPusher
                                                                    │ then the response,
                                                                    ▼ with "pushed": true | false

A scored request is pushed after its features were read (its own event is not in its own
features) and before its response is sent. Its rows go as the client sent them (join keys, request
fields and any other field: an event id, an event time); a row without the views' event time gets
the request's receive time (UTC). A failed push never fails the prediction: the response says
``"pushed": false``, and the failure is counted by reason (``tidemark_push_errors_total{model,reason}``,
reasons in :data:`PUSH_ERROR_REASONS`) and logged, once a minute per reason with how many more there
were (a client that never sends the event id would otherwise write a line per request).
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

from features.errors import EventError, OnlineStoreError, OnlineStoreUnavailable
from features.redaction import redact
from serving.event_push import EventSink
from tidemark.repeated_log import RepeatedLog

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
    failures: RepeatedLog = field(default_factory=lambda: RepeatedLog(log))

    def __post_init__(self) -> None:
        # raises UnknownPushSourceError now, at server start, rather than on every request
        views = self.pusher.views_of(self.push_source)
        self.timestamp_fields = tuple(dict.fromkeys(v.stream.timestamp_field for v in views if v.stream is not None))

    def push(self, rows: Sequence[Mapping[str, Any]], received_us: int) -> bool:
        """Push ``rows`` (a validated request's row objects); a row without an event time gets
        ``received_us`` (µs since the epoch, UTC). True when stored (a replay counts as stored);
        False when the push failed, which is logged and counted, never raised."""
        # integer µs since the epoch: an event time like any other, whatever the other rows send
        events = [self._timed(row, received_us) for row in rows]
        try:
            self.pusher.push(self.push_source, events)
            return True
        except EventError as exc:
            reason = "bad_event"
            self._failed(logging.WARNING, reason, str(exc))
        except OnlineStoreUnavailable as exc:
            reason = "store_unavailable"
            self._failed(logging.WARNING, reason, redact(str(exc)))
        except OnlineStoreError as exc:
            reason = "store_error"
            self._failed(logging.ERROR, reason, redact(str(exc)))
        except Exception:  # noqa: BLE001  (a push must never fail a prediction; logged with its traceback)
            reason = "internal"
            self._failed(logging.ERROR, reason, "", exc_info=True)
        if self.on_error is not None:
            self.on_error(self.model, reason)
        return False

    def _failed(self, level: int, reason: str, why: str, *, exc_info: bool = False) -> None:
        self.failures.log(level, reason, "scored events of %s not pushed to %s%s", self.model, self.push_source,
                          f": {why}" if why else "", exc_info=exc_info)

    def _timed(self, row: Mapping[str, Any], received: int) -> Mapping[str, Any]:
        missing = [f for f in self.timestamp_fields if row.get(f) is None]
        return {**row, **dict.fromkeys(missing, received)} if missing else row
