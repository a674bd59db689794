"""Log lines that would repeat on every request: the first of each kind, then one a minute.

A failure that every request meets (a client that never sends the event id a push needs, a store
that is down) would otherwise write a line per request: at 500 requests/s, 500 lines a second that
cost the request path CPU and bury every other line (one benchmark run logged 39,874). Such
failures are counted in a metric each time; the log says what happened once, and then how many
more there were:

    WARNING scored events of m not pushed to s: column 'id': ...
    WARNING scored events of m not pushed to s: column 'id': ... (29,988 more like it in the last 60 s)
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable, Hashable

__all__ = ["RepeatedLog"]


class RepeatedLog:
    """Thread-safe: :meth:`log` writes the first line of each ``kind``, then at most one line per
    ``every_s`` seconds per kind, saying how many lines of that kind it held back."""

    def __init__(self, logger: logging.Logger, every_s: float = 60.0,
                 clock: Callable[[], float] = time.monotonic) -> None:
        self._logger, self.every_s, self._clock = logger, every_s, clock
        self._lock = threading.Lock()
        self._kinds: dict[Hashable, tuple[float, int]] = {}  # kind -> (when last written, held back since)

    def log(self, level: int, kind: Hashable, message: str, *args: object, exc_info: bool = False) -> bool:
        """Log ``message % args`` at ``level`` (with the exception being handled when ``exc_info``)
        unless a line of ``kind`` went out less than ``every_s`` ago; returns whether it was written."""
        now = self._clock()
        with self._lock:
            last, held = self._kinds.get(kind, (float("-inf"), 0))
            if now - last < self.every_s:
                self._kinds[kind] = (last, held + 1)
                return False
            self._kinds[kind] = (now, 0)
        if held:
            message += f" ({held:,} more like it in the last {now - last:.0f} s)"
        self._logger.log(level, message, *args, exc_info=exc_info)
        return True
