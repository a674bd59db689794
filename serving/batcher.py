"""Dynamic micro-batching: rows from concurrent requests share one forward pass.

    request threads ── encode (numpy) ──► bounded queue ──► worker thread:
                                            take the first item, then more until ``max_batch``
                                            rows or ``max_wait_us`` after the first arrived;
                                            one forward call (any Predictor: a PyTorch module,
                                            a scikit-learn estimator, a pyfunc); split the
                                            predictions back to each waiting request

The same code runs on CUDA and on CPU. On a GPU a forward of 256 rows costs about what one row
costs, so waiting ~200 µs for company pays; on CPU the default wait is 0: the worker takes
whatever is already queued and goes. A full queue raises :class:`OverloadedError` at once (the
server answers 503) instead of letting latency grow without bound.
"""

from __future__ import annotations

import logging
import queue
import threading
import time
from concurrent.futures import Future
from dataclasses import dataclass, field
from typing import TYPE_CHECKING

import numpy as np

from serving.errors import OverloadedError

if TYPE_CHECKING:
    from serving.predictors import Predictor

__all__ = ["BatchStats", "MicroBatcher"]

log = logging.getLogger(__name__)


@dataclass
class BatchStats:
    """What the worker did (read by /metrics and tests)."""

    batches: int = 0
    rows: int = 0
    largest: int = 0
    sizes: list[int] = field(default_factory=list)  # the last 1,000 batch sizes


@dataclass
class _Item:
    arrays: tuple[np.ndarray, ...]
    rows: int
    future: Future[np.ndarray]
    queued_at: float


class MicroBatcher:
    """Batches forward calls of one :class:`serving.predictors.Predictor` across threads."""

    def __init__(self, predictor: Predictor, *, max_batch: int = 256, max_wait_us: int | None = None,
                 max_queue: int = 4_096, name: str = "model") -> None:
        self.predictor = predictor
        self.max_batch = max_batch
        self.max_wait_s = (max_wait_us if max_wait_us is not None else
                           (200 if predictor.accelerated else 0)) / 1e6
        self.stats = BatchStats()
        self._closed = False
        self._queue: queue.Queue[_Item | None] = queue.Queue(maxsize=max_queue)
        self._thread = threading.Thread(target=self._work, name=f"batcher-{name}", daemon=True)
        self._thread.start()

    def submit(self, *arrays: np.ndarray) -> Future[np.ndarray]:
        """Queue encoded rows (``Predictor.encode``'s arrays); the future gives their predictions."""
        if self._closed:
            raise OverloadedError("this model was replaced and its batcher closed; retry the request")
        future: Future[np.ndarray] = Future()
        try:
            self._queue.put_nowait(_Item(arrays, len(arrays[0]), future, time.perf_counter()))
        except queue.Full:
            raise OverloadedError(f"{self._queue.maxsize:,} batches are waiting for the model; retry shortly "
                                  "or add replicas") from None
        return future

    def score(self, *arrays: np.ndarray, timeout_s: float = 5.0) -> np.ndarray:
        """Submit and wait."""
        return self.submit(*arrays).result(timeout=timeout_s)

    def close(self) -> None:
        """Finish what is queued, then stop the worker."""
        self._closed = True
        self._queue.put(None)
        self._thread.join(timeout=10)

    def _work(self) -> None:
        while True:
            first = self._queue.get()
            if first is None:
                return
            items, rows = [first], first.rows
            deadline = first.queued_at + self.max_wait_s
            stop = False
            while rows < self.max_batch:
                try:
                    wait = deadline - time.perf_counter()
                    item = self._queue.get(timeout=wait) if wait > 0 else self._queue.get_nowait()
                except queue.Empty:
                    break
                if item is None:
                    stop = True
                    break
                items.append(item)
                rows += item.rows
            self._run(items, rows)
            if stop:
                return

    def _run(self, items: list[_Item], rows: int) -> None:
        try:
            if len(items) == 1:
                arrays = items[0].arrays
            else:
                arrays = tuple(np.concatenate(parts) for parts in zip(*(i.arrays for i in items), strict=True))
            scores = self.predictor.forward(*arrays)
        except Exception as exc:  # noqa: BLE001  (every waiter learns of it; the worker lives on)
            for item in items:
                item.future.set_exception(exc)
            return
        at = 0
        for item in items:
            item.future.set_result(scores[at:at + item.rows])
            at += item.rows
        stats = self.stats
        stats.batches += 1
        stats.rows += rows
        stats.largest = max(stats.largest, rows)
        stats.sizes.append(rows)
        if len(stats.sizes) > 1_000:
            del stats.sizes[:500]
