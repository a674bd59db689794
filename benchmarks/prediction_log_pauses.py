"""What the prediction log costs the thread that answers requests: per append, and while it writes.

A server answers requests on one thread while the log's writer converts and writes the last
second's rows on another. Every stretch the writer holds the GIL is a stretch no request makes
progress, so the tail of the request latency carries the writer's work (issue 18: 10–15 ms of it
each second at 300 one-row requests/s, the whole of the serving p99 over 5 ms). This script hands
the log ``--requests`` one-row requests the way ``Scorer`` does (~30 columns; a twentieth of the
requests from unknown entities, another layout), writes them with ``flush()``, and meanwhile runs
a thread that wakes every 0.2 ms and records how late it wakes. Two ways, alternating in one run:

* ``append_rows``: what the scorer calls (one list per column, extended per request; the writer
  makes each column once);
* ``append``: the generic call, a dict of arrays per request, concatenated by the writer.

Printed per way: the request thread's CPU per append (µs), the writer thread's CPU per write (ms),
the write's wall time, and the ticker's longest gap (the longest the writer kept the GIL).

    .venv/bin/python benchmarks/prediction_log_pauses.py
    .venv/bin/python benchmarks/prediction_log_pauses.py --requests 1000 --rounds 20
"""

from __future__ import annotations

import argparse
import statistics
import tempfile
import threading
import time
from pathlib import Path
from typing import Any

import numpy as np

from serving.prediction_log import PredictionLog

FEATURES = 22


def requests(n: int) -> list[tuple[int, dict[str, Any]]]:
    """``n`` one-row requests as the scorer hands them to the log: 2 keys, 2 request fields, 22
    features, id, variant, version and score; every 20th lacks its features (an unknown entity)."""
    out = []
    now_us = time.time_ns() // 1000
    for i in range(n):
        columns: dict[str, Any] = {"customer_id": np.array([i], np.int64), "merchant_id": np.array([i % 97], np.int64),
                                   "amount": np.array([12.5 + i]), "channel": np.array(["web"], dtype=object)}
        if i % 20:
            columns.update({f"f{j}": np.array([float(i * j)]) for j in range(FEATURES)})
        columns.update({"request_id": [f"req-{i}"], "variant": ["champion"], "model_version": ["3"],
                        "score": np.array([0.3])})
        out.append((now_us + i, columns))
    return out


class Ticker:
    """A thread that wakes every 0.2 ms and keeps the gaps between its wake-ups."""

    def __init__(self) -> None:
        self.gaps: list[float] = []
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)
        self._thread.start()

    def _run(self) -> None:
        last = time.perf_counter()
        while not self._stop.is_set():
            time.sleep(0.0002)
            now = time.perf_counter()
            self.gaps.append(now - last)
            last = now

    def stop(self) -> None:
        self._stop.set()
        self._thread.join()


class WriterClock:
    """The writer thread's CPU time in its writes (``PredictionLog._write_round``, wrapped)."""

    def __init__(self) -> None:
        self.cpu_s = 0.0
        inner = PredictionLog._write_round

        def timed(plog: PredictionLog, queued: Any) -> Any:
            started = time.thread_time()
            try:
                return inner(plog, queued)
            finally:
                self.cpu_s += time.thread_time() - started

        PredictionLog._write_round = timed  # type: ignore[method-assign]


def one_round(plog: PredictionLog, way: str, batch: list[tuple[int, dict[str, Any]]],
              ticker: Ticker, clock: WriterClock) -> dict[str, float]:
    """Queue ``batch`` one way, write it: µs of CPU per append, the write's wall and CPU (ms), and
    the ticker's longest gap during the write (ms)."""
    started = time.thread_time()
    for at_us, columns in batch:
        if way == "append_rows":
            plog.append_rows((FEATURES, len(columns)), at_us, columns)
        else:
            arrays = {k: np.asarray(v, dtype=object) if isinstance(v, list) else v for k, v in columns.items()}
            plog.append({"event_timestamp": np.array([at_us], dtype="datetime64[us]"), **arrays})
    append_us = (time.thread_time() - started) / len(batch) * 1e6
    time.sleep(0.05)
    first, cpu = len(ticker.gaps), clock.cpu_s
    started = time.perf_counter()
    plog.flush()
    wall = time.perf_counter() - started
    time.sleep(0.01)
    return {"append_us": append_us, "wall_ms": wall * 1e3, "cpu_ms": (clock.cpu_s - cpu) * 1e3,
            "gap_ms": max(ticker.gaps[first:]) * 1e3}


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--requests", type=int, default=500, help="one-row requests per write (a second at 500/s)")
    p.add_argument("--rounds", type=int, default=10, help="writes per way")
    args = p.parse_args()
    ways = ("append_rows", "append")
    batch = requests(args.requests)
    results: dict[str, list[dict[str, float]]] = {way: [] for way in ways}
    ticker, clock = Ticker(), WriterClock()
    with tempfile.TemporaryDirectory() as root, PredictionLog(Path(root), flush_interval_s=3_600,
                                                               max_rows=10**9) as plog:
        for way in ways:
            one_round(plog, way, batch, ticker, clock)  # warm-up: imports, first files
        for _ in range(args.rounds):
            for way in ways:
                results[way].append(one_round(plog, way, batch, ticker, clock))
    ticker.stop()
    print(f"one write of {args.requests} one-row requests, {args.rounds} rounds per way, alternating; medians")
    head = ("way", "append CPU µs", "write wall ms", "writer CPU ms", "longest GIL hold ms", "max")
    print(f"{head[0]:12s}  {head[1]:>13s}  {head[2]:>13s}  {head[3]:>13s}  {head[4]:>19s}  {head[5]:>6s}")
    for way, rows in results.items():
        med = {k: statistics.median(r[k] for r in rows) for k in rows[0]}
        print(f"{way:12s}  {med['append_us']:13.1f}  {med['wall_ms']:13.1f}  {med['cpu_ms']:13.1f}  "
              f"{med['gap_ms']:19.2f}  {max(r['gap_ms'] for r in rows):6.2f}")


if __name__ == "__main__":
    main()
