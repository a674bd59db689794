"""How long the prediction log's writer keeps other threads waiting for the GIL.

A server answers requests on one thread while the log's writer builds, converts and writes the
last second's rows on another. Every stretch the writer holds the GIL is a stretch no request
makes progress, so the tail of the request latency carries the writer's longest holds. This
script queues the rows of ``--requests`` one-row requests the way ``Scorer`` does
(``append_later``, ~30 columns), writes them with ``flush()``, and meanwhile runs a thread that
wakes every 0.2 ms and records how late it wakes: its largest gap is the longest the writer kept
the GIL. Two configurations, alternating in one run:

* ``chunked``: the writer as shipped (builds ``_BUILD_CHUNK`` parts per call, pauses in between);
* ``one call``: the whole round in one build call and no pauses (the writer before issue 18's
  last change).

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

import numpy as np

from serving import prediction_log
from serving.model_contract import ModelContract
from serving.prediction_log import PredictionLog
from serving.scorer import Scored, _log_columns


def parts(n: int) -> list[tuple]:
    """``n`` one-row requests as the scorer hands them to the log: 22 features, 2 keys, 2 request fields."""
    features = tuple(f"v:f{i}" for i in range(22))
    contract = ModelContract(features=features, join_keys=("customer_id", "merchant_id"), key_kinds=("int", "int"),
                             inputs=(*(f.split(":")[1] for f in features), "amount", "channel"), task="binary",
                             text_columns=("channel",))
    out = []
    for i in range(n):
        inputs = {"customer_id": np.array([i], np.int64), "merchant_id": np.array([i % 97], np.int64),
                  "amount": np.array([12.5]), "channel": np.array(["web"], dtype=object)}
        inputs.update({f"f{j}": np.array([float(j)]) for j in range(22)})
        out.append((f"req-{i}", inputs, Scored(np.array([0.3]), ["champion"], ["3"], np.ones(1, bool)), contract,
                    time.time_ns() // 1000))
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


def one_round(plog: PredictionLog, requests: list[tuple], ticker: Ticker) -> tuple[float, float]:
    """Queue ``requests``, write them; the round's wall time and the ticker's longest gap (ms)."""
    for part in requests:
        plog.append_later(1, part, _log_columns, (id(part[3]), *part[1]))
    time.sleep(0.05)
    first = len(ticker.gaps)
    started = time.perf_counter()
    plog.flush()
    wall = time.perf_counter() - started
    time.sleep(0.01)
    return wall * 1e3, max(ticker.gaps[first:]) * 1e3


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--requests", type=int, default=500, help="one-row requests per write (a second at 500/s)")
    p.add_argument("--rounds", type=int, default=10, help="writes per configuration")
    args = p.parse_args()
    shipped = (prediction_log._BUILD_CHUNK, prediction_log._PAUSE_S)
    configurations = {"chunked": shipped, "one call": (10**9, 0.0)}
    requests = parts(args.requests)
    results: dict[str, list[tuple[float, float]]] = {name: [] for name in configurations}
    ticker = Ticker()
    with tempfile.TemporaryDirectory() as root, PredictionLog(Path(root), flush_interval_s=3_600,
                                                               max_rows=10**9) as plog:
        one_round(plog, requests, ticker)  # warm-up: imports, first file
        for _ in range(args.rounds):
            for name, (chunk, pause) in configurations.items():
                prediction_log._BUILD_CHUNK, prediction_log._PAUSE_S = chunk, pause
                results[name].append(one_round(plog, requests, ticker))
    prediction_log._BUILD_CHUNK, prediction_log._PAUSE_S = shipped
    ticker.stop()
    print(f"one write of {args.requests} one-row requests, {args.rounds} rounds per configuration, alternating")
    print(f"{'writer':10s}  {'round wall ms (median)':>22s}  {'longest GIL hold ms: median':>28s}  {'max':>6s}")
    for name, rows in results.items():
        walls, holds = [w for w, _ in rows], [h for _, h in rows]
        print(f"{name:10s}  {statistics.median(walls):22.1f}  {statistics.median(holds):28.2f}  {max(holds):6.2f}")
    chunked, whole = (statistics.median(h for _, h in results[n]) for n in configurations)
    print(f"the longest hold, median over rounds: {whole / chunked:.1f}x shorter chunked")


if __name__ == "__main__":
    main()
