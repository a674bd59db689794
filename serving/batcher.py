"""Dynamic micro-batching: rows from concurrent requests share one forward pass.

    request threads ── encode (numpy) ──► bounded queue ──► worker thread:
                                            take the first item, then more until ``max_batch``
                                            rows or ``max_wait_us`` after the first arrived;
                                            one forward pass on the module's device; split the
                                            scores back to each waiting request

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
    import torch

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
    numeric: np.ndarray
    codes: np.ndarray
    future: Future[np.ndarray]
    queued_at: float


class MicroBatcher:
    """Batches forward passes of one ``module`` (``FraudModel.module``) across threads."""

    def __init__(self, module: torch.nn.Module, *, max_batch: int = 256, max_wait_us: int | None = None,
                 max_queue: int = 4_096, name: str = "model") -> None:
        import torch

        self.module = module
        self.device = next(module.parameters()).device
        self.max_batch = max_batch
        self.max_wait_s = (max_wait_us if max_wait_us is not None else
                           (200 if self.device.type == "cuda" else 0)) / 1e6
        self.stats = BatchStats()
        self._closed = False
        self._queue: queue.Queue[_Item | None] = queue.Queue(maxsize=max_queue)
        self._torch = torch
        self._thread = threading.Thread(target=self._work, name=f"batcher-{name}", daemon=True)
        self._thread.start()

    def submit(self, numeric: np.ndarray, codes: np.ndarray) -> Future[np.ndarray]:
        """Queue encoded rows; the future gives their float64 probabilities."""
        if self._closed:
            raise OverloadedError("this model was replaced and its batcher closed; retry the request")
        future: Future[np.ndarray] = Future()
        try:
            self._queue.put_nowait(_Item(numeric, codes, future, time.perf_counter()))
        except queue.Full:
            raise OverloadedError(f"{self._queue.maxsize:,} batches are waiting for the model; retry shortly "
                                  "or add replicas") from None
        return future

    def score(self, numeric: np.ndarray, codes: np.ndarray, timeout_s: float = 5.0) -> np.ndarray:
        """Submit and wait."""
        return self.submit(numeric, codes).result(timeout=timeout_s)

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
            items, rows = [first], len(first.numeric)
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
                rows += len(item.numeric)
            self._run(items, rows)
            if stop:
                return

    def _run(self, items: list[_Item], rows: int) -> None:
        torch = self._torch
        try:
            numeric = np.concatenate([i.numeric for i in items]) if len(items) > 1 else items[0].numeric
            codes = np.concatenate([i.codes for i in items]) if len(items) > 1 else items[0].codes
            with torch.inference_mode():
                logits = self.module(torch.from_numpy(numeric).to(self.device), torch.from_numpy(codes).to(self.device))
                scores = torch.sigmoid(logits.double()).cpu().numpy()
        except Exception as exc:  # noqa: BLE001  (every waiter learns of it; the worker lives on)
            for item in items:
                item.future.set_exception(exc)
            return
        at = 0
        for item in items:
            n = len(item.numeric)
            item.future.set_result(scores[at:at + n])
            at += n
        stats = self.stats
        stats.batches += 1
        stats.rows += rows
        stats.largest = max(stats.largest, rows)
        stats.sizes.append(rows)
        if len(stats.sizes) > 1_000:
            del stats.sizes[:500]
