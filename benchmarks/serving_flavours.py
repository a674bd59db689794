"""Serving a team's scikit-learn model: ``tidemark serve`` against ``mlflow models serve`` of it.

The same world as ``benchmarks/serving.py`` (its offline tables, Feast apply, materialization into
a redis-server on a free loopback port, its request pool and load generator), but the champion is
a scikit-learn pipeline (one-hot encoded categories, imputed numbers, logistic regression) over
the same features, registered with ``pipelines.model_registry.register_model`` as any team would.
tidemark runs the pipeline's preprocessing as its compiled plan (``serving.sklearn_plan``: array
steps from the fitted statistics, checked against the pipeline at load) and the logistic
regression's arithmetic on the request's columns and the online features; the peer, ``mlflow models serve`` of the same version (its own
default: one uvicorn worker, ``--env-manager local``), gets the feature values in the request.

Prints the load table, the comparison and PASS/FAIL lines for issue 16's goal: at one row per
request, at least 10x the peer's throughput (closed-loop capacity) and a lower p99 (open loop).

    .venv/bin/python benchmarks/serving_flavours.py                # 500 requests/s for 20 s
    .venv/bin/python benchmarks/serving_flavours.py --quick        # smoke test
"""

from __future__ import annotations

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

log = logging.getLogger("serving_flavours")

GOAL_THROUGHPUT = 10.0  # x the peer's capacity at one row per request


BENCH = load_serving_bench()  # at import: see benchmarks/serving_loader.py


def fit_pipeline(frame: Any, numeric: list[str], categorical: list[str], seed: int) -> Any:
    """A team's usual tabular classifier, fitted on a label drawn from the features."""
    from sklearn.compose import ColumnTransformer
    from sklearn.impute import SimpleImputer
    from sklearn.linear_model import LogisticRegression
    from sklearn.pipeline import make_pipeline
    from sklearn.preprocessing import OneHotEncoder, StandardScaler

    rng = np.random.default_rng(seed)
    amount = frame["amount"].to_numpy(float)
    label = (np.log1p(amount) + rng.normal(0, 1, len(frame)) > np.log1p(np.median(amount)) + 1).astype(int)
    encode = ColumnTransformer([
        # text arrives as objects with None for missing, at training as at serving
        ("text", make_pipeline(SimpleImputer(missing_values=None, strategy="constant", fill_value="unknown"),
                               OneHotEncoder(handle_unknown="ignore")), categorical),
        ("numbers", make_pipeline(SimpleImputer(), StandardScaler()), numeric)])
    return make_pipeline(encode, LogisticRegression(max_iter=500)).fit(frame[[*categorical, *numeric]], label), label


def setup(bench: Any, args: Any, root: Path, redis_url: str) -> tuple[Any, ...]:
    """The world, and the pipeline registered and promoted as the champion."""
    import pandas as pd
    from pit_data import quiet

    from examples.fraud.feature_views import DEFAULT_FEATURES
    from features.sdk import FeatureClient
    from pipelines import model_registry
    from pipelines.model_registry import register_model
    from tidemark.settings import Settings, SparkSettings

    settings = Settings(home=root / "home", spark=SparkSettings(master="local[2]", driver_memory="2g",
                                                                shuffle_partitions=4), redis_url=redis_url)
    now = pd.Timestamp.now(tz="UTC").floor("s")
    rows = bench.write_offline(settings.offline_dir, settings.raw_dir, bench.VOCABULARY, args, now)
    fc = FeatureClient(settings)
    with quiet():
        fc.apply()
        fc.materialize_incremental(now.to_pydatetime(), progress=False)
    bench.stop_spark()
    pool = bench.request_pool(fc, DEFAULT_FEATURES, bench.VOCABULARY, args)
    categorical = [c for c in pool.inputs.columns if not pd.api.types.is_numeric_dtype(pool.inputs[c])]
    numeric = [c for c in pool.inputs.columns if c not in categorical]
    frame = pd.concat([pd.DataFrame(pool.rows)[["customer_id", "merchant_id"]], pool.inputs], axis=1)
    frame[numeric] = frame[numeric].astype(float)
    frame[categorical] = frame[categorical].astype(object).where(frame[categorical].notna(), None)
    model, label = fit_pipeline(frame, numeric, categorical, args.seed)
    frame["label"] = label
    with quiet():
        version = register_model(model, settings.model_name, features=list(DEFAULT_FEATURES), frame=frame,
                                 label="label", task="binary", feature_client=fc)
        model_registry.promote(model_registry.connect(settings), settings.model_name, version.version, first=True)
    return settings, fc, pool, model, [*categorical, *numeric], str(version.version), rows


def verdicts(runs: list[dict[str, Any]], checks: dict[str, Any]) -> list[dict[str, str]]:
    """Issue 16's goal against the peer, and that both answered the in-process model's scores."""
    servers = list(checks)
    mine = next(name for name in servers if name.startswith("tidemark"))
    theirs = next((name for name in servers if name.startswith("mlflow")), "")

    def run(server: str, open_loop: bool) -> dict[str, Any]:
        return BENCH.run_of(runs, server, open_loop=open_loop)

    out = []
    ours, peer = run(mine, False), run(theirs, False)
    if ours and peer:
        ratio = ours["achieved_rps"] / max(peer["achieved_rps"], 1e-9)
        out.append({"goal": f"capacity at one row per request at least {GOAL_THROUGHPUT:g}x mlflow models serve's",
                    "status": "PASS" if ratio >= GOAL_THROUGHPUT else "FAIL",
                    "detail": f"{ours['achieved_rps']:.0f} vs {peer['achieved_rps']:.0f} ok/s: {ratio:.1f}x"})
    ours, peer = run(mine, True), run(theirs, True)
    if ours and peer:
        o, p = ours["latency_ms"]["p99"], peer["latency_ms"]["p99"]
        out.append({"goal": "one-row p99 lower than mlflow models serve's at the same open-loop rate",
                    "status": "PASS" if o < p and ours["error_count"] == 0 else "FAIL",
                    "detail": f"{o:.2f} vs {p:.2f} ms at {ours['target_rps']:g}/s ({ours['error_count']} errors, "
                              f"peer {peer['error_count']})"})
    for server, info in checks.items():
        out.append({"goal": f"{server} answers the in-process model's scores", "detail": info["scores"],
                    "status": "PASS" if info["scores"] == "same" else "FAIL"})
    return out


def main(argv: list[str] | None = None) -> int:
    bench = BENCH
    args = bench.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(name)s %(message)s", stream=sys.stderr)
    for noisy in ("feast", "mlflow", "alembic", "py4j", "urllib3"):
        logging.getLogger(noisy).setLevel(logging.WARNING)
    from tests.integration.redis_servers import start_redis

    began = time.perf_counter()
    root = Path(args.workdir or tempfile.mkdtemp(prefix="tidemark-bench-flavours-")).resolve()
    redis_server = start_redis(root / "redis")
    try:
        settings, fc, pool, model, columns, version, rows = setup(bench, args, root, redis_server.url)
        n = min(args.check_rows, len(pool.rows))
        import pandas as pd

        from examples.fraud.feature_views import DEFAULT_FEATURES

        def expected(now: bool) -> np.ndarray:
            """The pipeline's scores of the check rows, from the online values as they are now or
            as the pool was made (see ``serving.run_server``)."""
            inputs = bench.model_inputs(fc, pool.rows[:n], DEFAULT_FEATURES) if now else pool.inputs.iloc[:n]
            checked = inputs[columns].copy()
            for c in columns:
                numeric = pd.api.types.is_numeric_dtype(checked[c])
                checked[c] = (checked[c].astype(float) if numeric
                              else checked[c].astype(object).where(checked[c].notna(), None))
            return model.predict_proba(checked)[:, 1]

        runs, checks = [], {}
        for target in bench.targets(settings, version, pool, columns, n, args):
            target_runs, checks[target.name] = bench.run_server(target, settings, expected, root, args)
            runs += target_runs
        found = verdicts(runs, checks)
        print(f"\nscikit-learn pipeline ({type(model[-1]).__name__} after {len(model[0].transformers)} column "
              f"transformers) over {len(columns)} inputs; {rows:,} offline rows; {os.cpu_count()} CPUs")
        print(bench.load_table(runs))
        print("\n" + "\n".join(bench.comparison(runs)))
        print("\n" + "\n".join(f"{v['status']:7} {v['goal']}: {v['detail']}" for v in found))
        print(f"\ntotal wall time {time.perf_counter() - began:.0f} s")
        if args.json:
            args.json.write_text(json.dumps({"runs": runs, "checks": checks, "goals": found}, indent=1, default=str))
    finally:
        redis_server.stop()
        if args.workdir is None:
            shutil.rmtree(root, ignore_errors=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
