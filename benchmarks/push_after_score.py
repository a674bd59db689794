"""What pushing each scored request as an event costs a one-row predict (``push_scored_events``).

One redis-server, one team project with a stream feature view (``tests/integration/stream_project``:
a count and a sum over the last hour per account), one registered regressor; two servers of the
same model over the same store, one pushing its scored rows to the view's push source, one not.
One-row requests alternate between them (same process, same moment), each with a new event id
over 1,000 accounts; the time is the ASGI call through Starlette's test client (no socket), and
separately the push alone (``ScoredEvents.push``). Prints median and p99 per path.

    .venv/bin/python benchmarks/push_after_score.py [--requests 400]
"""

from __future__ import annotations

import argparse
import logging
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from features.sdk import FeatureClient
from serving.scored_events import ScoredEvents
from serving.server import build_server
from tests.integration.redis_servers import start_redis
from tests.integration.stream_project import MODEL, PUSH_SOURCE, register_count_model, write_project
from tidemark.settings import Settings, SparkSettings


def _stats(ms: list[float]) -> str:
    a = np.asarray(ms)
    return f"{np.median(a):8.3f} {np.percentile(a, 99):8.3f}"


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--requests", type=int, default=400, help="one-row requests per path")
    args = parser.parse_args()
    logging.basicConfig(level=logging.WARNING)
    from starlette.testclient import TestClient

    with tempfile.TemporaryDirectory() as tmp:
        home = Path(tmp)
        redis = start_redis(home / "redis")
        try:
            write_project(home / "repo", redis.url)
            settings = Settings(home=home, spark=SparkSettings(master="local[2]"), redis_url=redis.url,
                                feast_repo=home / "repo", model_name=MODEL)
            fc = FeatureClient(settings)
            fc.apply()
            register_count_model(settings, fc)
            plain = build_server(settings, models=[MODEL], feature_client=fc, refresh_s=3600, prediction_log=False)
            pushing = build_server(settings, models=[MODEL], feature_client=fc, refresh_s=3600, prediction_log=False,
                                   push_scored={MODEL: PUSH_SOURCE})
            times: dict[str, list[float]] = {"predict, no push": [], "predict + push": [], "push alone": []}
            rng = np.random.default_rng(0)
            with TestClient(plain.app) as a, TestClient(pushing.app) as b:
                for i in range(args.requests + 50):  # the first 50 of each path warm up
                    row = {"account_id": int(rng.integers(0, 1000)), "amount": 10.0, "event_id": i}
                    for name, client in (("predict, no push", a), ("predict + push", b)):
                        started = time.perf_counter()
                        answer = client.post(f"/v1/models/{MODEL}/predict", json={"rows": [row]})
                        elapsed = (time.perf_counter() - started) * 1e3
                        assert answer.status_code == 200 and answer.json().get("pushed", True), answer.text
                        if i >= 50:
                            times[name].append(elapsed)
                alone = ScoredEvents(MODEL, PUSH_SOURCE, fc.event_pusher())
                for i in range(args.requests):
                    row = {"account_id": int(rng.integers(0, 1000)), "amount": 10.0, "event_id": 10**6 + i}
                    started = time.perf_counter()
                    assert alone.push([row], time.time_ns() // 1000)
                    times["push alone"].append((time.perf_counter() - started) * 1e3)
            plain.close()
            pushing.close()
        finally:
            redis.stop()
    print(f"{'one-row requests, ms':<24} {'median':>8} {'p99':>8}   (n={args.requests} each)")
    for name, ms in times.items():
        print(f"{name:<24} {_stats(ms)}")
    added = np.median(times["predict + push"]) - np.median(times["predict, no push"])
    print(f"added by the push (median): {added:.3f} ms")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
