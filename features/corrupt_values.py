"""Corrupt online values: counted every time one is read, logged once per key.

A corrupt value (garbage, truncated, a bad checksum, another view definition, a key of another
Redis type) reads as that entity's missing value (:func:`features.packed_layout.unpack_rows`), so
it must not go unseen: every read of one adds to :data:`CORRUPT_VALUES` (serving exports it as
``tidemark_online_corrupt_values_total``), and the first read of each key logs an error naming
the key and the reason, with what to do. Repeats of a key are not logged again (a hot key would
otherwise write a line per request); after ``max_keys`` distinct keys, only a summary is logged
every minute.
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Sequence

from features.errors import CorruptValueError

__all__ = ["CORRUPT_VALUES", "CorruptValueReport"]

log = logging.getLogger(__name__)


class CorruptValueReport:
    """Thread-safe counts and log-once of corrupt values read."""

    def __init__(self, max_keys: int = 10_000, summary_every_s: float = 60.0) -> None:
        self.max_keys = max_keys
        self.summary_every_s = summary_every_s
        self._lock = threading.Lock()
        self._seen: set[bytes | str] = set()
        self._count = 0
        self._unlogged = 0
        self._last_summary = 0.0

    @property
    def count(self) -> int:
        """Corrupt values read since the process started (a key read twice counts twice)."""
        return self._count

    def record(self, errors: Sequence[CorruptValueError]) -> None:
        """Count ``errors`` (one per corrupt value read) and log the keys not seen before."""
        if not errors:
            return
        new: list[CorruptValueError] = []
        with self._lock:
            self._count += len(errors)
            for error in errors:
                if error.key in self._seen:
                    continue
                if len(self._seen) < self.max_keys:
                    self._seen.add(error.key)
                    new.append(error)
                else:
                    self._unlogged += 1
            summary = self._summary_locked()
        for error in new:
            log.error("%s It reads as missing until it is rewritten.", error)
        if summary:
            log.error("%s", summary)

    def _summary_locked(self) -> str | None:
        now = time.monotonic()
        if not self._unlogged or now - self._last_summary < self.summary_every_s:
            return None
        self._last_summary, unlogged, self._unlogged = now, self._unlogged, 0
        return (f"{unlogged} more corrupt online values read (over {self.max_keys} distinct keys already "
                f"logged); {self._count} in all since start")


#: The process's report: the online reader and the Feast plugin record into it.
CORRUPT_VALUES = CorruptValueReport()
