"""A canary's latency check under the benchmark's full load: fair to a challenger identical to the champion?

The world of ``benchmarks/serving.py`` (offline tables, Feast apply, materialization into a
redis-server on a free loopback port, its request pool and load generator), with the champion
registered three times over:

* an **identical challenger**: the champion's own weights, registered as a second version;
* a **slower challenger**: a real slower model, the same inputs and preprocessing with wider
  hidden layers (``--slow-hidden``), so every call does more work per row: about 1.9x the
  champion's CPU per call, well past the policy's p99 guard (1.2x). The former 1024 x 512 cost
  1.24-1.33x; under load its p99 ratio stayed at 1.02-1.13, inside the guard, so the policy
  rightly let it through once the 5 % step stopped judging latency.

``tidemark serve`` runs on loopback; for each challenger this script starts a canary
(``pipelines.canary.start``), drives the load (open loop at ``--rate`` requests/s, or with
``--rate 0`` a saturating closed loop of ``--connections`` clients) for ``--seconds`` per step, and
then calls the controller (``pipelines.canary.step``) once: shadow, 5, 25, 50, 100 %. Per step it
prints each variant's evidence (calls, p50, p99 from the Redis histograms), the Mann–Whitney z and
the decision, then PASS/FAIL lines: the identical challenger passes the latency check in shadow and
in every step; the slower one is rolled back on latency, from shadow and from 5 %.

The policy is the default with ``min_dwell_s`` 0, ``min_samples`` ``--min-samples`` and one look per
step (``max_looks`` 1): the step's whole latency alpha at that look, the strictest setting.

    .venv/bin/python benchmarks/canary_under_load.py --quick          # ~3 minutes
    .venv/bin/python benchmarks/canary_under_load.py                  # 500 requests/s, 20 s a step
    .venv/bin/python benchmarks/canary_under_load.py --rate 0 --connections 8   # saturating closed loop
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import logging
import os
import shutil
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import numpy as np

HERE = Path(__file__).resolve().parent
REPO = HERE.parent
# ``import serving`` must find the package, not benchmarks/serving.py beside this file
sys.path[:] = [str(REPO), *(p for p in sys.path if os.path.abspath(p or ".") != str(HERE)), str(HERE)]

from serving_loader import load_serving_bench  # after the path is set

log = logging.getLogger("canary_under_load")


BENCH = load_serving_bench()  # at import: see benchmarks/serving_loader.py


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0],
                                formatter_class=argparse.ArgumentDefaultsHelpFormatter)
    p.add_argument("--quick", action="store_true", help="small data, 8 s a step (about 3 minutes in all)")
    p.add_argument("--rate", type=float, default=500.0, help="open-loop requests/s; 0: closed loop (saturating)")
    p.add_argument("--connections", type=int, default=None,
                   help="keep-alive connections (open loop, default 16) or clients (closed loop, default 8)")
    p.add_argument("--workers", type=int, default=1, help="tidemark serve --workers (the recorded runs: 1)")
    p.add_argument("--seconds", type=float, default=None, help="seconds of load per step (default 20; quick 8)")
    p.add_argument("--warmup", type=float, default=1.0, help="seconds of load per step before the measured ones")
    p.add_argument("--min-samples", type=int, default=None, help="policy min_samples (default 300; quick 100)")
    p.add_argument("--slow-hidden", type=int, nargs="+", default=[2048, 1024],
                   help="hidden layer widths of the slower challenger (the champion's: 256 128)")
    p.add_argument("--timeout", type=float, default=5.0, help="seconds a request may take before it counts as failed")
    p.add_argument("--customers", type=int, default=None, help="customers in the online store (default 25,000)")
    p.add_argument("--merchants", type=int, default=None, help="merchants in the online store (default 2,500)")
    p.add_argument("--pool", type=int, default=None, help="distinct request rows, cycled (default 4,096)")
    p.add_argument("--workdir", type=Path, default=None, help="scratch home, kept (default: a temp dir, removed)")
    p.add_argument("--seed", type=int, default=7)
    p.add_argument("--json", type=Path, default=None, metavar="PATH", help="also write every figure here")
    args = p.parse_args(argv)
    quick = args.quick
    for name, (full, small) in {"seconds": (20.0, 8.0), "min_samples": (300, 100), "customers": (25_000, 2_000),
                                "merchants": (2_500, 200), "pool": (4_096, 512)}.items():
        if getattr(args, name) is None:
            setattr(args, name, small if quick else full)
    if args.connections is None:
        args.connections = 16 if args.rate > 0 else 8
    # what benchmarks/serving.py's setup reads
    args.model, args.train_home = "built", BENCH.TRAIN_HOME
    return args


def register_challenger(settings: Any, choice: Any, champion: str, why: str) -> str:
    """Register ``choice`` as the challenger, its gate verdict "pass" against ``champion``."""
    from pit_data import quiet

    from pipelines import model_registry

    with quiet():
        version = BENCH.register(settings, choice, champion=False)
    model_registry.record_gate(model_registry.connect(settings), settings.model_name, version, {
        "gate.verdict": "pass", "gate.champion_version": champion, "gate.reason": why})
    return version


def slower(choice: Any, hidden: tuple[int, ...], seed: int) -> Any:
    """The champion's inputs and preprocessing with wider hidden layers: more work per row."""
    import torch

    from examples.fraud.model import FraudModel, build_module

    spec = dataclasses.replace(choice.model.spec, hidden=hidden)
    torch.manual_seed(seed)
    return dataclasses.replace(choice, model=FraudModel(spec, build_module(spec)),
                               source=f"benchmarks/canary_under_load.py: hidden {hidden}")


def call_cost_ms(models: dict[str, Any], frame: Any, calls: int = 300) -> dict[str, float]:
    """Median thread CPU of one one-row ``predict_proba`` per model here, alone, on numpy columns
    as the server passes them (ms)."""
    columns = {c: frame[c].to_numpy() for c in frame.columns}
    out = {}
    for name, model in models.items():
        times = []
        for i in range(calls):
            j = i % len(frame)
            row = {c: v[j:j + 1] for c, v in columns.items()}
            t0 = time.thread_time()
            model.predict_proba(row)
            times.append(time.thread_time() - t0)
        out[name] = float(np.median(times) * 1e3)
    return out


def wait_for_versions(port: int, wanted: dict[str, str], timeout_s: float = 60.0) -> None:
    """Until the server's /metrics says each alias serves the wanted version."""
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        _, text = BENCH.http_call(port, "GET", "/metrics")
        if all(_serves(text.decode(), a, v) for a, v in wanted.items()):
            return
        time.sleep(0.5)
    raise RuntimeError(f"the server did not load {wanted} within {timeout_s:.0f} s")


def _serves(metrics: str, alias: str, version: str) -> bool:
    """Whether ``alias`` serves ``version`` (with several workers a version retired shows 0, not gone)."""
    return any(line.startswith("tidemark_model_version_info{") and f'alias="{alias}"' in line
               and f'version="{version}"' in line and line.rstrip().endswith(" 1.0") for line in metrics.splitlines())


def drive(port: int, bodies: list[bytes], args: argparse.Namespace) -> dict[str, Any]:
    """One load run against the server; its summary (without the per-request latencies)."""
    requests = tuple(BENCH.http_request(port, "POST", "/v1/predict", b) for b in bodies)
    # each request an event id of its own, and an answer counts only when its payment was pushed
    spec = BENCH.LoadSpec(port, requests, b'"pushed":true', args.rate, args.seconds, args.warmup,
                          args.connections, args.timeout, first_id=BENCH.first_id())
    result = BENCH.load_in_subprocess(spec)
    result.pop("latencies_us", None)
    return dict(result)


def step_evidence(redis_client: Any, model: str, state: Any) -> dict[str, dict[str, float]]:
    """Each variant's calls, p50 and p99 (ms) in the current step, from the servers' Redis histograms
    (at 100 %, the champion's of the step before, as the controller compares)."""
    from monitoring.rollout import histogram_quantile
    from serving.canary_evidence import LATENCY_BOUNDS, read_step

    bounds = (*LATENCY_BOUNDS, float("inf"))
    out = {}
    seen = read_step(redis_client, model, state.canary_id, state.step)
    if state.mode == "canary" and state.weight_pct >= 100 and state.step > 1:
        before = read_step(redis_client, model, state.canary_id, state.step - 1)
        seen = {**seen, **({"champion": before["champion"]} if "champion" in before else {})}
    for variant, counts in seen.items():
        lat = counts.latency_counts
        if lat.sum():
            out[variant] = {"n": int(lat.sum()), "p50_ms": 1e3 * histogram_quantile(bounds, lat, 0.5),
                            "p99_ms": 1e3 * histogram_quantile(bounds, lat, 0.99)}
    return out


def walk(name: str, settings: Any, policy: Any, port: int, bodies: list[bytes], redis_client: Any,
         args: argparse.Namespace, *, shadow: bool) -> list[dict[str, Any]]:
    """Start a canary and step it after each load run until it is over; one record per look."""
    from pipelines import canary

    state = canary.start(settings, shadow=shadow)
    looks = []
    while state.mode != "off" and len(looks) < 12:
        where = "shadow" if state.mode == "shadow" else f"{state.weight_pct:g}%"
        load = drive(port, bodies, args)
        time.sleep(2.5)  # the servers add their evidence to Redis about once a second
        seen = step_evidence(redis_client, settings.model_name, state)
        outcome = canary.step(settings, policy)
        ev = outcome.evidence
        looks.append({"challenger": name, "step": where, "action": outcome.action, "reasons": outcome.reasons,
                      "variants": seen, "z": ev.get("latency.z", float("nan")),
                      "critical_z": ev.get("latency.critical_z", float("nan")),
                      "p99_ratio": ev.get("latency.p99_ratio", float("nan")),
                      "latency_reject": bool(ev.get("latency.reject", 0.0)),
                      "latency_compared": bool(ev.get("latency.compared", 1.0)),
                      "latency_hold": any(r.startswith("latency") for r in outcome.reasons) and outcome.action != "rollback",
                      "ok_rps": load["achieved_rps"], "p99_request_ms": load["latency_ms"]["p99"],
                      "errors": load["error_count"]})
        log.info("%s %s: %s", name, where, outcome.action)
        state = outcome.state
    return looks


def look_table(looks: list[dict[str, Any]]) -> str:
    """Per look: what the controller compared (in shadow: the shadow against the champion's copy of its
    calls on the shadow thread, ``baseline``, where the servers time one), and the request thread's
    champion calls beside it."""
    header = ["challenger", "step", "ok/s", "req p99 ms", "compared", "n", "p50 ms", "p99 ms", "challenger n",
              "p50 ms", "p99 ms", "p99 ratio", "z", "critical z", "decision", "req-thread champion p50/p99 ms"]
    rows = []
    for look in looks:
        v, shadow = look["variants"], look["step"] == "shadow"
        champion = v.get("champion", {})
        a = v["baseline"] if shadow and "baseline" in v else champion
        b = v.get("shadow" if shadow else "challenger", {})
        rows.append([look["challenger"], look["step"], f"{look['ok_rps']:.0f}", f"{look['p99_request_ms']:.1f}",
                     "baseline" if a is not champion else "champion",
                     *(f"{x.get('n', 0)}" if k == "n" else f"{x.get(k, float('nan')):.3f}"
                       for x in (a, b) for k in ("n", "p50_ms", "p99_ms")),
                     f"{look['p99_ratio']:.2f}", f"{look['z']:.2f}", f"{look['critical_z']:.2f}", look["action"],
                     f"{champion.get('p50_ms', float('nan')):.3f} / {champion.get('p99_ms', float('nan')):.3f}"])
    return BENCH._aligned([header, *rows], right={2, 3, 5, 6, 7, 8, 9, 10, 11, 12, 13})


def verdicts(identical: list[dict[str, Any]], slow: list[list[dict[str, Any]]]) -> list[str]:
    """PASS/FAIL lines: the identical challenger never fails latency and is promoted; each slow one is
    rolled back on latency."""
    lines = []
    for look in identical:
        ok = not look["latency_reject"] and not look["latency_hold"] and look["action"] != "rollback"
        judged = (f"p99 ratio {look['p99_ratio']:.2f}, z {look['z']:.2f} (critical {look['critical_z']:.2f})"
                  if look["latency_compared"] else "not compared at this step (100 %: no champion traffic; "
                                                   "below the policy's min_latency_share_pct: too sparse)")
        lines.append(f"{'PASS' if ok else 'FAIL':5} identical challenger passes the latency check at {look['step']}: "
                     f"{judged}, {look['action']}")
    promoted = bool(identical) and identical[-1]["action"] == "promoted"
    lines.append(f"{'PASS' if promoted else 'FAIL':5} identical challenger is promoted "
                 f"({' -> '.join(look['action'] + ' at ' + look['step'] for look in identical)})")
    for looks in slow:
        last = looks[-1] if looks else {"step": "-", "action": "none", "reasons": []}
        ok = last["action"] == "rollback" and any(r.startswith("latency") for r in last["reasons"])
        lines.append(f"{'PASS' if ok else 'FAIL':5} slower challenger rolled back on latency, started "
                     f"{'in shadow' if looks and looks[0]['step'] == 'shadow' else 'at 5%'}: {last['action']} at "
                     f"{last['step']}" + (f" ({'; '.join(last['reasons'])[:160]})" if last["reasons"] else ""))
    return lines


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(name)s %(message)s", stream=sys.stderr)
    for noisy in ("feast", "mlflow", "alembic", "py4j", "urllib3"):
        logging.getLogger(noisy).setLevel(logging.WARNING)
    import redis

    from monitoring.rollout import CanaryPolicy
    from pipelines import model_registry
    from tests.integration.redis_servers import free_port, start_redis

    began = time.perf_counter()
    root = Path(args.workdir or tempfile.mkdtemp(prefix="tidemark-bench-canary-")).resolve()
    redis_server = start_redis(root / "redis")
    server = None
    try:
        settings, _fc, choice, pool, champion, _rows = BENCH.setup(args, root, redis_server.url)
        identical = register_challenger(settings, choice, champion, "the champion's own weights")
        slow_choice = slower(choice, tuple(args.slow_hidden), args.seed)
        costs = call_cost_ms({"champion": choice.model, "slower": slow_choice.model}, pool.inputs)
        policy = dataclasses.replace(CanaryPolicy(), min_dwell_s=0.0, min_samples=args.min_samples, max_looks=1)
        port = free_port()
        server = BENCH.start_server("tidemark", [*BENCH.tidemark_cmd(port, args.workers), "--refresh-s", "1"],
                                    BENCH.server_env(settings), port, "/readyz", root, 300.0)
        wait_for_versions(port, {"champion": champion, "challenger": identical})
        bodies = [pool.tidemark_body(i) for i in range(len(pool.rows))]
        client = redis.Redis.from_url(redis_server.url)
        same = walk("identical", settings, policy, port, bodies, client, args, shadow=True)
        slow_runs = []
        for shadow in (True, False):
            ml = model_registry.connect(settings)
            now_champion = str(model_registry.alias_version(ml, settings.model_name, model_registry.CHAMPION).version)
            version = register_challenger(settings, slow_choice, now_champion, "a deliberately slower model")
            wait_for_versions(port, {"champion": now_champion, "challenger": version})
            slow_runs.append(walk("slower", settings, policy, port, bodies, client, args, shadow=shadow))
        load = (f"open loop {args.rate:g}/s over {args.connections} connections" if args.rate > 0
                else f"closed loop, {args.connections} clients")
        print(f"\n{load}, {args.seconds:g} s a step; {os.cpu_count()} CPUs; one call alone (thread CPU, median of "
              f"300 here): champion {costs['champion']:.3f} ms, slower {costs['slower']:.3f} ms "
              f"({costs['slower'] / costs['champion']:.2f}x); policy max_looks 1, min_samples {args.min_samples}, "
              f"max_p99_ratio {policy.max_p99_ratio:g}, latency alpha per step {policy.latency_alpha:.4f}")
        looks = [*same, *(look for run in slow_runs for look in run)]
        print(look_table(looks))
        found = verdicts(same, slow_runs)
        print("\n" + "\n".join(found))
        print(f"\ntotal wall time {time.perf_counter() - began:.0f} s")
        if args.json:
            args.json.write_text(json.dumps({"costs_ms": costs, "looks": looks, "verdicts": found}, indent=1,
                                            default=str) + "\n")
        return 0 if all(line.startswith("PASS") for line in found) else 1
    finally:
        if server is not None:
            server.stop()
        redis_server.stop()
        if args.workdir is None:
            shutil.rmtree(root, ignore_errors=True)


if __name__ == "__main__":
    sys.exit(main())
