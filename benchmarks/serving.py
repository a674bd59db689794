"""Serving latency: tidemark's scoring server against ``mlflow models serve``, and the floor.

Sets up a scratch home (offline tables with fresh values, Feast definitions applied, materialized
into a redis-server started here on a free loopback port, one fraud model registered and promoted
in a SQLite MLflow registry), then measures in one run:

* the model alone: ``FraudModel.predict_proba`` (pandas in, encoding included) and the raw module
  forward on pre-encoded tensors, for batches of 1 to 1,024 rows, on the CPU and, where
  ``torch.cuda`` is available, on the GPU;
* the floor of a one-row request: one ``MGET`` of the keys the request reads plus one forward of
  one row; and, in process, the stages of ``Scorer.score`` (online read, model, the rest);
* end to end: ``tidemark serve --workers N`` for each of ``--workers`` (2 and 1) on loopback,
  driven by an open-loop load generator at a fixed rate (latency counted from each request's
  scheduled send time, so a stall is not hidden by coordinated omission), plus ``/healthz`` at the
  same rate (HTTP alone) and a closed-loop capacity run; server CPU from the whole process tree;
* the peer: ``mlflow models serve -w N`` (the first count) of the same registered version, given
  the same rows with the feature values already in the request (``dataframe_split``), under the
  same loads.

Prints the tables, and PASS/FAIL lines for issue 18's goals (p99 under 5 ms for a one-row request
at 500 requests/s with zero errors, on 2 CPU cores; at most 1 ms of server CPU per request; 10x
the peer's capacity) and for the checks behind the comparison.

    .venv/bin/python benchmarks/serving.py                          # 500 requests/s for 20 s
    .venv/bin/python benchmarks/serving.py --rate 300 --seconds 60 --json /tmp/serving.json
    .venv/bin/python benchmarks/serving.py --quick                  # smoke test, ~2 minutes
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import copy
import gc
import http.client
import importlib.machinery
import importlib.util
import itertools
import json
import logging
import multiprocessing
import os
import platform
import resource
import shlex
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from collections import Counter
from collections.abc import Callable
from concurrent.futures import ProcessPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

if TYPE_CHECKING:
    import pandas as pd

    from features.sdk import FeatureClient
    from tidemark.settings import Settings


def _package_spec(name: str) -> Any:
    """The import spec of the package ``name``, looked for everywhere but in this file's folder."""
    here = os.path.dirname(os.path.abspath(__file__))
    elsewhere = [p for p in sys.path if os.path.abspath(p or ".") != here]
    for finder in sys.meta_path:  # the path finder, and the editable install's finder
        if finder is importlib.machinery.PathFinder:
            spec = finder.find_spec(name, elsewhere)
        else:
            spec = getattr(finder, "find_spec", lambda *_: None)(name, None)
        if spec is not None and spec.loader is not None and spec.origin != os.path.abspath(__file__):
            return spec
    raise ImportError(f"the {name} package is not importable; install tidemark (`make install`)")


if __name__ == "serving":
    # A sibling script run from this folder (train.py) has the folder first on sys.path, so its
    # ``import examples.fraud.model`` finds this file. Hand the name over to the real package.
    _spec = _package_spec("serving")
    sys.modules["serving"] = importlib.util.module_from_spec(_spec)
    _spec.loader.exec_module(sys.modules["serving"])

log = logging.getLogger("serving_bench")

REPO = Path(__file__).resolve().parent.parent
TRAIN_HOME = Path(tempfile.gettempdir()) / "tidemark-bench-train" / "r1000000-d120-s7"  # benchmarks/train.py's
BATCHES = (1, 8, 64, 256, 1024)
GOAL_P99_MS, GOAL_RATE = 5.0, 500.0
GOAL_CPU_MS, GOAL_PEER_RATIO = 1.0, 10.0  # server CPU per one-row request; capacity against mlflow serve
REQUEST_FIELDS = ("amount", "channel")  # what a request carries besides the join keys
UNKNOWN_SHARE = 0.03                    # request rows whose customer has no online values
# Every request carries its payment's event id, as a client of the example does: the server pushes the
# scored payment to the real-time windows under that id, and a repeated id counts once. The pool's rows
# hold this placeholder, which each request sent gets replaced by an id of its own (same width).
EVENT_ID = "transaction_id"
ID_STAMP = 999_999_999_999
# Category values for a model built here (a trained model brings its own vocabularies).
VOCABULARY: dict[str, tuple[str, ...]] = {
    "channel": ("ecom", "pos"),
    "age_band": ("18-24", "25-34", "35-44", "45-54", "55-64", "65+"),
    "home_country": ("AT", "BE", "CZ", "DE", "DK", "ES", "FI", "FR", "GR", "IE", "IT", "NL", "PL", "PT", "SE"),
    "category": ("electronics", "fashion", "fuel", "gambling", "grocery", "health", "home", "jewelry",
                 "restaurants", "software", "sports", "subscriptions", "transport", "travel", "utilities"),
    "country": ("AT", "BE", "CH", "CZ", "DE", "DK", "ES", "FI", "FR", "GB", "GR", "HU", "IE", "IT", "LU",
                "NL", "NO", "PL", "PT", "RO", "SE", "SK", "US"),
}
PAYMENTS_PER_WEEK = 8  # per customer, on average: about 5 % of customers paid in the last hour, 68 % in a day


# --- the model --------------------------------------------------------------------------------


@dataclass
class ModelChoice:
    """The model both servers run: a CPU ``FraudModel``, its online features and MLflow signature."""

    model: Any
    features: tuple[str, ...]
    signature: Any
    source: str

    @property
    def vocabulary(self) -> dict[str, tuple[str, ...]]:
        return {c.name: c.vocabulary for c in self.model.spec.categorical}


def trained_model(home: Path) -> ModelChoice | None:
    """The newest model ``train_and_register`` left in ``home`` (only read), if it reads tidemark's
    default features and the request fields; else None."""
    from mlflow.models import Model

    from examples.fraud.feature_views import DEFAULT_FEATURES
    from examples.fraud.model import FraudModel

    specs = sorted(home.glob("mlartifacts/*/models/*/artifacts/artifacts/spec.json"), key=lambda p: p.stat().st_mtime)
    specs = [s for s in specs if s.with_name("weights.pt").is_file()]
    if not specs:
        return None
    spec = specs[-1]
    model = FraudModel.load(spec, spec.with_name("weights.pt"), device="cpu")
    stored = {ref.split(":", 1)[1]: ref for ref in DEFAULT_FEATURES}
    other = [c for c in model.spec.columns if c not in stored and c not in REQUEST_FIELDS]
    if other:
        log.warning("the model in %s needs inputs %s beyond the default features; building one instead", spec, other)
        return None
    features = tuple(ref for name, ref in stored.items() if name in model.spec.columns)
    signature = Model.load(str(spec.parent.parent)).signature
    return ModelChoice(model, features, signature, f"trained by train_and_register ({spec.parent.parent}, read only)")


def built_model(frame: pd.DataFrame, seed: int) -> ModelChoice:
    """A ``FraudModel`` of the default architecture over the default features and the request
    fields, its preprocessing fitted on ``frame``, its weights freshly initialised (the forward
    costs the same as a trained one's)."""
    import torch
    from mlflow.models import ModelSignature
    from mlflow.types import ColSpec, Schema
    from mlflow.types.schema import AnyType

    from examples.fraud.feature_views import DEFAULT_FEATURES
    from examples.fraud.model import FraudModel, ModelSpec, build_module

    columns = [*REQUEST_FIELDS, *(ref.split(":", 1)[1] for ref in DEFAULT_FEATURES)]
    categorical = [c for c in columns if c in VOCABULARY]
    spec = ModelSpec.fit(frame, [c for c in columns if c not in VOCABULARY], categorical, min_count=1)
    torch.manual_seed(seed)
    model = FraudModel(spec, build_module(spec))
    signature = ModelSignature(  # as examples.fraud.train_job logs it: text as string, numbers as Any
        inputs=Schema([ColSpec("string", c) if c in categorical else ColSpec(AnyType(), c) for c in spec.columns]),
        outputs=Schema([ColSpec("double", "fraud_probability")]))
    return ModelChoice(model, DEFAULT_FEATURES, signature,
                       f"built here: default architecture {spec.hidden}, untrained weights")


def register(settings: Settings, choice: ModelChoice, *, champion: bool = True) -> str:
    """Log ``choice`` as ``tidemark train`` does (pyfunc from code, the model contract), register it
    (it becomes the challenger) and, with ``champion``, promote it to champion; returns the version."""
    import mlflow

    from examples.fraud.pyfunc import MODEL_CODE
    from examples.fraud.train_job import fraud_contract
    from features.sdk import FeatureClient
    from pipelines import model_registry

    ml = model_registry.connect(settings)
    experiment = model_registry.experiment_id(ml, settings, settings.model_name)
    with mlflow.start_run(experiment_id=experiment, run_name="benchmarks/serving.py") as run, \
            tempfile.TemporaryDirectory() as tmp:
        info = mlflow.pyfunc.log_model(name="model", python_model=str(MODEL_CODE),
                                       artifacts=choice.model.save(Path(tmp)), signature=choice.signature,
                                       pip_requirements=["mlflow", "torch", "numpy", "pandas"])
        spec = choice.model.spec
        contract = fraud_contract(FeatureClient(settings), choice.features, spec.columns,
                                  [c.name for c in spec.categorical])
        version = model_registry.register(ml, settings.model_name, info.model_uri, run_id=run.info.run_id,
                                          tags=contract.to_tags(), description=choice.source)
    if champion:
        model_registry.promote(ml, settings.model_name, str(version.version), first=True)
    return str(version.version)


# --- data -------------------------------------------------------------------------------------


def write_offline(offline: Path, raw: Path, vocab: dict[str, tuple[str, ...]], args: argparse.Namespace,
                  now: pd.Timestamp) -> int:
    """The customers' payments of the last 7 days (``PAYMENTS_PER_WEEK`` on average, the newest
    5 minutes old: the raw history the customer windows are computed from), one offline row per
    merchant, 5 minutes old, and profiles 10 days old. Returns the rows written."""
    import pandas as pd

    from tests.integration.offline_tables import write_by_date, write_transactions

    rng = np.random.default_rng(args.seed)
    n, m = args.customers, args.merchants
    t = now - pd.Timedelta("5min")
    per_customer = rng.poisson(PAYMENTS_PER_WEEK, n)
    customer = np.repeat(np.arange(1, n + 1, dtype=np.int64), per_customer)
    ago_us = rng.integers(0, 7 * 86_400_000_000 - 1, len(customer))
    payments = write_transactions(pd.DataFrame({
        "customer_id": customer, "event_timestamp": t - pd.to_timedelta(ago_us, unit="us"),
        "amount": np.round(rng.gamma(2.0, 25.0, len(customer)), 2)}), raw)
    seen = now - pd.Timedelta("10D")
    profile = pd.DataFrame({"customer_id": np.arange(1, n + 1, dtype=np.int64), "event_timestamp": [seen] * n,
                            "created_timestamp": [seen] * n, "income": np.round(rng.lognormal(10.4, 0.5, n), -1),
                            "age_band": rng.choice(vocab["age_band"], n),
                            "home_country": rng.choice(vocab["home_country"], n)})
    write_by_date(profile, offline / "customer_profile")
    merchant = pd.DataFrame({"merchant_id": np.arange(1, m + 1, dtype=np.int64), "event_timestamp": [t] * m,
                             "created_timestamp": [t] * m, "category": rng.choice(vocab["category"], m),
                             "country": rng.choice(vocab["country"], m), "txn_count_30d": rng.poisson(300, m),
                             "amt_mean_30d": np.round(rng.gamma(2.0, 30.0, m), 3),
                             "fraud_rate_30d": rng.beta(1.0, 150.0, m)})
    write_by_date(merchant, offline / "merchant_stats")
    return len(payments) + n + m


@dataclass
class RequestPool:
    """One-row requests, cycled by every load run: what tidemark gets (join keys + request fields)
    and what the model sees (request fields + online features), row by row."""

    rows: list[dict[str, Any]]
    inputs: pd.DataFrame

    def tidemark_body(self, i: int) -> bytes:
        return json.dumps({"rows": [self.rows[i]]}).encode()

    def peer_body(self, i: int, columns: list[str]) -> bytes:
        return dataframe_split(self.inputs.iloc[i:i + 1], columns)


def dataframe_split(frame: pd.DataFrame, columns: list[str]) -> bytes:
    """``{"dataframe_split": …}`` for ``mlflow models serve``; missing values as null."""
    import pandas as pd

    values = [[None if pd.isna(v) else v for v in row] for row in frame[columns].astype(object).itertuples(index=False)]
    return json.dumps({"dataframe_split": {"columns": columns, "data": values}}, default=_json_scalar).encode()


def _json_scalar(value: Any) -> Any:
    if hasattr(value, "item"):  # numpy scalars
        return value.item()
    raise TypeError(f"{type(value).__name__} is not JSON serializable")


def request_pool(fc: FeatureClient, features: tuple[str, ...], vocab: dict[str, tuple[str, ...]],
                 args: argparse.Namespace) -> RequestPool:
    """``--pool`` request rows (about 3% for unknown customers) and the online values they read now."""

    rng = np.random.default_rng(args.seed + 1)
    n = args.pool
    customers = rng.integers(1, args.customers + 1, n)
    unknown = rng.random(n) < UNKNOWN_SHARE
    customers[unknown] += args.customers + 1_000_000
    rows = [{EVENT_ID: ID_STAMP, "customer_id": int(c), "merchant_id": int(m), "amount": float(a), "channel": str(ch)}
            for c, m, a, ch in zip(customers, rng.integers(1, args.merchants + 1, n),
                                   np.round(rng.gamma(2.0, 30.0, n), 2), rng.choice(vocab["channel"], n), strict=True)]
    return RequestPool(rows, model_inputs(fc, rows, features))


def model_inputs(fc: FeatureClient, rows: list[dict[str, Any]], features: tuple[str, ...]) -> pd.DataFrame:
    """What the model sees for ``rows``: their request fields and the online values as they are now.

    "Now" matters: a tidemark server pushes every payment it scores to the real-time windows
    (``push_scored_events``), so after one server's load runs the next server reads other values
    for the same rows than the pool was made with."""
    import pandas as pd

    keys = [{"customer_id": r["customer_id"], "merchant_id": r["merchant_id"]} for r in rows]
    online = fc.online_features(keys, list(features)).frame
    request = pd.DataFrame(rows)[list(REQUEST_FIELDS)]
    return pd.concat([request, online.drop(columns=["customer_id", "merchant_id"])], axis=1)


def stop_spark() -> None:
    """Stop the setup's Spark session and its JVM: nothing reads the offline store after
    materialization, and an idle JVM would still share the two cores with the servers."""
    from pyspark import SparkContext
    from pyspark.sql import SparkSession

    session = SparkSession.getActiveSession()
    if session is not None:
        session.stop()
    gateway = SparkContext._gateway  # pyspark keeps the JVM after stop(); its process is ours
    if gateway is not None:
        gateway.shutdown()
        proc = getattr(gateway, "proc", None)
        if proc is not None:
            proc.terminate()
            proc.wait(timeout=30)
        SparkContext._gateway = SparkContext._jvm = None


# --- the model alone, the floor, the stages ---------------------------------------------------


def time_calls(fn: Callable[[], Any], calls: int, max_s: float) -> np.ndarray:
    """Nanoseconds per call of ``fn``: ``calls`` calls or ``max_s`` seconds (at least 20), after 3
    untimed ones."""
    for _ in range(3):
        fn()
    out = np.empty(calls, dtype=np.int64)
    deadline = time.perf_counter() + max_s
    for i in range(calls):
        started = time.perf_counter_ns()
        fn()
        out[i] = time.perf_counter_ns() - started
        if i >= 19 and time.perf_counter() > deadline:
            return out[:i + 1]
    return out


def stats_ms(ns: np.ndarray) -> dict[str, float]:
    return {"p50": float(np.percentile(ns, 50)) / 1e6, "p99": float(np.percentile(ns, 99)) / 1e6,
            "max": float(ns.max()) / 1e6, "n": len(ns)}


def devices() -> list[str]:
    import torch

    return ["cpu", "cuda"] if torch.cuda.is_available() else ["cpu"]


def measure_forward(choice: ModelChoice, pool: RequestPool, args: argparse.Namespace) -> list[dict[str, Any]]:
    """Per device and batch size: ``predict_proba`` on a frame, and the module on device tensors."""
    from examples.fraud.model import FraudModel

    rng = np.random.default_rng(args.seed + 2)
    out = []
    for device in devices():
        model = FraudModel(choice.model.spec, copy.deepcopy(choice.model.module)).to(device)
        for batch in BATCHES:
            frame = pool.inputs.iloc[rng.integers(0, len(pool.inputs), batch)].reset_index(drop=True)
            for path, ns in time_model(model, frame, device, args).items():
                s = stats_ms(ns)
                out.append({"device": device, "path": path, "batch": batch, **s,
                            "rows_per_s": batch / (s["p50"] / 1e3)})
    return out


def time_model(model: Any, frame: pd.DataFrame, device: str, args: argparse.Namespace) -> dict[str, np.ndarray]:
    """Nanoseconds per ``model.predict_proba(frame)`` and per module forward on ``frame``'s encoded
    tensors (already on ``device``; on CUDA, synchronized)."""
    import torch

    numeric, codes = (torch.from_numpy(a).to(device) for a in model.encode(frame))
    sync = torch.cuda.synchronize if device == "cuda" else (lambda: None)

    def forward() -> None:
        model.module(numeric, codes)
        sync()

    timed = {"predict_proba": time_calls(lambda: model.predict_proba(frame), args.forward_calls, args.forward_seconds)}
    with torch.inference_mode():
        timed["module forward"] = time_calls(forward, args.forward_calls, args.forward_seconds)
    return timed


def one_row_keys(reader: Any, plan: Any, row: dict[str, Any], project: str) -> list[bytes]:
    """The Redis keys ``OnlineReader`` reads for one request row (one per feature view)."""
    from features.online_keys import entity_ids, key_prefix, view_keys

    prefix = key_prefix(project)
    return [view_keys(prefix, view.name, entity_ids(view.join_keys, view.key_kinds,
                                                    [[row[k]] for k in view.join_keys]))[0] for view in plan.views]


def measure_floor(settings: Settings, fc: FeatureClient, choice: ModelChoice, pool: RequestPool,
                  args: argparse.Namespace, device: str) -> dict[str, dict[str, float]]:
    """One request's floor on ``device``: one ``MGET`` of its keys (redis-py) + one forward of its row
    (inputs to the device, scores back), each row prepared outside the timer."""
    import redis
    import torch

    from examples.fraud.model import FraudModel

    reader = fc.online_reader()
    plan = reader.plan(list(choice.features))
    raw = redis.Redis.from_url(settings.redis_url)
    model = FraudModel(choice.model.spec, copy.deepcopy(choice.model.module)).to(device)
    n_rows = min(len(pool.rows), 512)
    keys = [one_row_keys(reader, plan, pool.rows[i], settings.project) for i in range(n_rows)]
    tensors = [tuple(torch.from_numpy(a) for a in model.encode(pool.inputs.iloc[i:i + 1])) for i in range(n_rows)]
    calls = args.inprocess_calls
    lat = {k: np.empty(calls, dtype=np.int64) for k in ("mget", "forward", "floor")}
    with torch.inference_mode():
        for i in range(-3, calls):
            k, (numeric, codes) = keys[i % n_rows], tensors[i % n_rows]
            t0 = time.perf_counter_ns()
            raw.execute_command("MGET", *k)
            t1 = time.perf_counter_ns()
            model.module(numeric.to(device), codes.to(device)).cpu()
            t2 = time.perf_counter_ns()
            if i >= 0:
                lat["mget"][i], lat["forward"][i], lat["floor"][i] = t1 - t0, t2 - t1, t2 - t0
    raw.close()
    return {k: stats_ms(v) for k, v in lat.items()} | {"keys": {"n": len(keys[0])}}


def measure_stages(settings: Settings, fc: FeatureClient, pool: RequestPool, root: Path,
                   args: argparse.Namespace) -> dict[str, dict[str, float]]:
    """A one-row request in this process, no socket: the ASGI app called directly (body,
    validation, ``Scorer.score``, the scored payment's push, JSON; built as ``tidemark serve`` builds
    it, each request with an event id of its own), ``Scorer.score`` alone (prediction log on), and parts of it:
    ``OnlineReader.read_columns``, the champion's ``predict`` (encoding and forward) and
    ``FraudModel.encode``; then the HTTP layer alone against a raw ASGI app (:func:`layer_stages`).
    Wall time per call and this process's CPU time per call."""
    import dataclasses

    import pandas as pd

    from features.sdk import FeatureClient
    from pipelines.cli_serving import push_scored
    from serving.prediction_log import PredictionLog
    from serving.server import build_server

    # The same code, with a read budget of a second rather than the server's 50 ms: on a loaded
    # machine one stalled read would open the breaker and end the run; the servers keep 50 ms.
    settings = dataclasses.replace(settings, online_timeout_ms=1000)
    fc = FeatureClient(settings)
    server = build_server(settings, feature_client=fc, refresh_s=3600, prediction_log=False,
                          push_scored=push_scored(settings, [settings.model_name]))
    server.scorer.log_sink = PredictionLog(root / "in-process-log")  # not the server's log, which is counted
    loop = _event_loop()
    try:
        champion = server.slots.get("champion")
        assert champion is not None
        reader, plan = fc.online_reader(), fc.online_reader().plan(list(champion.features))
        n = min(len(pool.rows), 512)
        frames = [{"customer_id": np.array([r["customer_id"]], dtype=np.int64),
                   "merchant_id": np.array([r["merchant_id"]], dtype=np.int64),
                   "amount": np.array([r["amount"]], dtype=np.float64),
                   "channel": np.array([r["channel"]], dtype=object)} for r in pool.rows[:n]]
        inputs = [{c: v.to_numpy(dtype=np.float64, na_value=np.nan) if pd.api.types.is_numeric_dtype(v.dtype)
                   else v.to_numpy(dtype=object) for c, v in pool.inputs.iloc[i:i + 1].items()} for i in range(n)]
        bodies = [pool.tidemark_body(i) for i in range(n)]
        counter, ids = iter(range(10**12)), first_id()

        def asgi() -> None:
            i = next(counter)
            status, answer = loop.run_until_complete(asgi_post(server.app, "/v1/predict", with_id(bodies[i % n], ids + i)))
            if status != 200 or b'"pushed":true' not in answer:
                raise RuntimeError(f"the app answered {status}: {answer[:300]!r}")

        def score() -> Any:
            i = next(counter)
            return server.scorer.score(frames[i % n], f"bench-{i}")

        parts: dict[str, Callable[[], Any]] = {
            "ASGI app, POST /v1/predict (no socket)": asgi,
            "Scorer.score (read, route, model, log)": score,
            "  OnlineReader.read_columns": lambda: reader.read_columns(plan, frames[next(counter) % n]),
            "  LoadedModel.predict (encode + batcher)": lambda: champion.predict(inputs[next(counter) % n]),
            "    FraudModel.encode": lambda: champion.model.encode(inputs[next(counter) % n]),
        }
        parts.update(layer_stages(server, loop, bodies, frames[0]))
        return {name: timed_stage(fn, args.inprocess_calls) for name, fn in parts.items()}
    finally:
        server.close()
        loop.close()


RAW_ASGI = "raw ASGI app: body read, fixed JSON answer"
LAYER = "tidemark app, scoring stubbed (HTTP layer)"


def timed_stage(fn: Callable[[], Any], calls: int) -> dict[str, float]:
    """``stats_ms`` of ``fn``'s wall time per call, plus ``cpu``: this process's CPU ms per call
    (every thread: the prediction log's writer counts, as in the server)."""
    started = time.process_time()
    ns = time_calls(fn, calls, 60.0)
    return stats_ms(ns) | {"cpu": (time.process_time() - started) * 1e3 / (len(ns) + 3)}


class FixedScorer:
    """The served scorer's name, request schema and contract, and one fixed answer to every
    request: the app around it is the HTTP layer alone (validation, JSON, headers). Benchmark only."""

    def __init__(self, scorer: Any, scored: Any) -> None:
        self._scorer, self._scored = scorer, scored

    @property
    def name(self) -> str:
        return str(self._scorer.name)

    def row_schema(self) -> Any:
        return self._scorer.row_schema()

    def contract(self) -> Any:
        return self._scorer.contract()

    def score(self, rows: Any, request_id: str, *, at_us: Any = None) -> Any:
        return self._scored


def layer_stages(server: Any, loop: asyncio.AbstractEventLoop, bodies: list[bytes],
                 row: dict[str, np.ndarray]) -> dict[str, Callable[[], None]]:
    """The HTTP layer alone against the floor of any ASGI app: a raw ASGI app that reads the body
    and answers a fixed JSON, and tidemark's app (on the event loop, as on a CPU node) over a
    scorer that returns one fixed answer, for the same bodies."""
    from serving.app import create_app

    answer = json.dumps({"request_id": "x" * 32, "model": server.scorer.name, "predictions": [
        {"score": 0.5, "variant": "champion", "model_version": "1", "features_found": True}]}).encode()

    async def raw(scope: dict[str, Any], receive: Callable[[], Any], send: Callable[[Any], Any]) -> None:
        body, more = b"", True
        while more:
            message = await receive()
            body, more = body + message.get("body", b""), message.get("more_body", False)
        await send({"type": "http.response.start", "status": 200,
                    "headers": [(b"content-type", b"application/json"), (b"content-length", str(len(answer)).encode())]})
        await send({"type": "http.response.body", "body": answer})

    layer = create_app(FixedScorer(server.scorer, server.scorer.score(row, "bench-layer")), inline=True)  # type: ignore[arg-type]
    n, counter = len(bodies), iter(range(10**12))

    def post(app: Any) -> Callable[[], None]:
        def call() -> None:
            status, _ = loop.run_until_complete(asgi_post(app, "/v1/predict", bodies[next(counter) % n]))
            if status != 200:
                raise RuntimeError(f"the app answered {status}")
        return call

    return {RAW_ASGI: post(raw), LAYER: post(layer)}


def _event_loop() -> asyncio.AbstractEventLoop:
    """uvloop's when installed (what uvicorn runs on), else asyncio's."""
    try:
        import uvloop
    except ImportError:
        return asyncio.new_event_loop()
    return uvloop.new_event_loop()


async def asgi_post(app: Any, path: str, body: bytes) -> tuple[int, bytes]:
    """POST ``body`` to an ASGI ``app`` without a server; returns the status and the answer's body."""
    scope = {"type": "http", "asgi": {"version": "3.0"}, "http_version": "1.1", "method": "POST", "scheme": "http",
             "path": path, "raw_path": path.encode(), "query_string": b"", "root_path": "",
             "headers": [(b"content-type", b"application/json"), (b"content-length", str(len(body)).encode())],
             "client": ("127.0.0.1", 50000), "server": ("127.0.0.1", 80)}
    messages = [{"type": "http.request", "body": body, "more_body": False}]
    status, answer = 0, b""

    async def receive() -> dict[str, Any]:
        return messages.pop() if messages else {"type": "http.disconnect"}

    async def send(message: dict[str, Any]) -> None:
        nonlocal status, answer
        if message["type"] == "http.response.start":
            status = message["status"]
        else:
            answer += message.get("body", b"")

    await app(scope, receive, send)
    return status, answer


# --- servers ------------------------------------------------------------------------------------


def proc_table() -> dict[int, tuple[int, str, float, int]]:
    """pid -> (parent pid, name, CPU seconds, RSS bytes) of every process (Linux ``/proc``)."""
    tick, page = os.sysconf("SC_CLK_TCK"), os.sysconf("SC_PAGE_SIZE")
    out = {}
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            raw = (entry / "stat").read_text()
            argv = (entry / "cmdline").read_bytes().split(b"\0")
        except OSError:
            continue
        end = raw.rindex(")")
        f = raw[end + 2:].split()  # f[0] is field 3 (state) of proc(5)
        out[int(entry.name)] = (int(f[1]), _name(argv, raw[raw.index("(") + 1:end]),
                                (int(f[11]) + int(f[12])) / tick, int(f[21]) * page)
    return out


def _name(argv: list[bytes], comm: str) -> str:
    """``java``, ``python``, or for a Python script (``mlflow``, ``uvicorn``) the script's name."""
    argv = [a for a in argv if a]
    if len(argv) == 1 and b" " in argv[0]:  # a process title set by setproctitle: one string
        argv = argv[0].split(b" ")
    name = os.path.basename(argv[0].decode(errors="replace")) if argv else comm
    if name.startswith("python") and len(argv) > 1 and argv[1] and not argv[1].startswith(b"-"):
        return os.path.basename(argv[1].decode(errors="replace"))
    return name


@dataclass
class ServerProc:
    """A server we started, in its own session, with its output in ``log_path``."""

    name: str
    proc: subprocess.Popen[bytes]
    port: int
    log_path: Path
    seen: set[int] = field(default_factory=set)  # every pid ever in its tree
    ready_s: float = float("nan")                 # seconds from start to the first 200 on the readiness path

    def tree(self) -> dict[int, tuple[int, str, float, int]]:
        """The server's process and its descendants now."""
        table = proc_table()
        children: dict[int, list[int]] = {}
        for pid, (ppid, *_rest) in table.items():
            children.setdefault(ppid, []).append(pid)
        found, todo = {}, [self.proc.pid]
        while todo:
            pid = todo.pop()
            if pid in table:
                found[pid] = table[pid]
                todo += children.get(pid, [])
        self.seen |= set(found)
        return found

    def usage(self) -> dict[str, dict[str, float]]:
        """CPU seconds and RSS (MiB) of the tree, by command name (``python``, ``java``, …)."""
        out: dict[str, dict[str, float]] = {}
        for _, comm, cpu, rss in self.tree().values():
            u = out.setdefault(comm, {"cpu_s": 0.0, "rss_mib": 0.0, "processes": 0})
            u["cpu_s"] += cpu
            u["rss_mib"] += rss / 2**20
            u["processes"] += 1
        return out

    def stop(self) -> None:
        """SIGTERM (a graceful shutdown: the prediction log is flushed), then whatever of its tree is left."""
        self.tree()
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(timeout=60)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait(timeout=10)
        for pid in sorted(self.seen - {self.proc.pid}):
            for sig in (signal.SIGTERM, signal.SIGKILL):
                try:
                    os.kill(pid, sig)
                except ProcessLookupError:
                    break
                time.sleep(0.5)

    def tail(self, lines: int = 15) -> str:
        return "\n".join(self.log_path.read_text(errors="replace").splitlines()[-lines:])


def start_server(name: str, cmd: list[str], env: dict[str, str], port: int, ready_path: str, root: Path,
                 timeout_s: float) -> ServerProc:
    """Start ``cmd`` and wait until ``GET ready_path`` answers 200 (raises with the log's tail if not)."""
    log_path = root / f"{name}.log"
    with open(log_path, "wb") as out:
        proc = subprocess.Popen(cmd, cwd=REPO, env=env, stdout=out, stderr=subprocess.STDOUT,
                                stdin=subprocess.DEVNULL, start_new_session=True)
    server = ServerProc(name, proc, port, log_path)
    started = time.perf_counter()
    while time.perf_counter() - started < timeout_s:
        if proc.poll() is not None:
            raise RuntimeError(f"{name} exited with {proc.returncode}; its log ends:\n{server.tail()}")
        try:
            if http_call(port, "GET", ready_path, timeout_s=2.0)[0] == 200:
                server.ready_s = time.perf_counter() - started
                log.info("%s ready on port %d after %.1f s", name, port, server.ready_s)
                return server
        except (OSError, http.client.HTTPException):
            pass
        time.sleep(0.25)
    server.stop()
    raise RuntimeError(f"{name} not ready within {timeout_s:.0f} s; its log ends:\n{server.tail()}")


def server_env(settings: Settings) -> dict[str, str]:
    """The environment both servers run in: the scratch home, its Redis and its MLflow registry; this
    environment's bin folder first on PATH, as when it is activated (``mlflow models serve`` runs
    ``uvicorn`` from PATH)."""
    path = os.pathsep.join([str(Path(sys.executable).parent), os.environ.get("PATH", "")])
    return {**os.environ, "PATH": path, "TIDEMARK_HOME": str(settings.home),
            "TIDEMARK_REDIS_URL": str(settings.redis_url),
            "TIDEMARK_PROJECT": settings.project, "TIDEMARK_MODEL_NAME": settings.model_name,
            "MLFLOW_TRACKING_URI": settings.tracking_uri, "PYTHONUNBUFFERED": "1"}


def tidemark_cmd(port: int, workers: int = 1) -> list[str]:
    """``tidemark serve --workers N`` on loopback (the console script's entry point, on this interpreter)."""
    return [sys.executable, "-c", "import sys; from pipelines.cli import main; sys.exit(main(sys.argv[1:]))",
            "serve", "--host", "127.0.0.1", "--port", str(port), "--workers", str(workers)]


def mlflow_cmd(settings: Settings, version: str, port: int, workers: int) -> list[str]:
    """``mlflow models serve`` of the registered version, ``workers`` uvicorn workers, this environment."""
    script = Path(sys.executable).with_name("mlflow")
    head = [str(script)] if script.exists() else [sys.executable, "-m", "mlflow"]
    return [*head, "models", "serve", "-m", f"models:/{settings.model_name}/{version}", "--env-manager", "local",
            "-h", "127.0.0.1", "-p", str(port), "-w", str(workers)]


def http_call(port: int, method: str, path: str, body: bytes | None = None, timeout_s: float = 30.0
              ) -> tuple[int, bytes]:
    """One plain HTTP/1.1 request (setup and checks, not load)."""
    conn = http.client.HTTPConnection("127.0.0.1", port, timeout=timeout_s)
    try:
        conn.request(method, path, body=body, headers={"content-type": "application/json"} if body else {})
        answer = conn.getresponse()
        return answer.status, answer.read()
    finally:
        conn.close()


def http_request(port: int, method: str, path: str, body: bytes = b"") -> bytes:
    """The raw bytes of a keep-alive HTTP/1.1 request, as the load generator sends them."""
    head = f"{method} {path} HTTP/1.1\r\nHost: 127.0.0.1:{port}\r\n"
    if method == "POST":
        head += f"Content-Type: application/json\r\nContent-Length: {len(body)}\r\n"
    return head.encode() + b"\r\n" + body


# --- the load generator (runs in its own process) ----------------------------------------------


@dataclass(frozen=True)
class LoadSpec:
    """One load run against ``127.0.0.1:port``: ``rate`` requests/s open loop over a pool of
    ``connections`` keep-alive connections, or with ``rate`` 0 a closed loop of ``connections``
    clients sending back to back; ``warmup_s`` seconds not counted, then ``seconds`` measured."""

    port: int
    requests: tuple[bytes, ...]  # cycled
    expect: bytes                # a 200 answer's body must hold this
    rate: float
    seconds: float
    warmup_s: float
    connections: int
    timeout_s: float
    nice: int = 0                # added to the generator's nice value (negative: needs privileges)
    first_id: int = 0            # request k carries event id first_id + k in place of ID_STAMP (0: sent as is)

    def request(self, k: int) -> bytes:
        """The ``k``-th request of the run: the pool cycled, each with an event id of its own."""
        raw = self.requests[k % len(self.requests)]
        return with_id(raw, self.first_id + k) if self.first_id else raw


_STAMP = str(ID_STAMP).encode()
_RUNS = itertools.count(1)  # runs of this process (load runs, the in-process stages): each sends ids of its own


def first_id() -> int:
    """The first event id of a new run: 10⁹ ids a run, all as wide as :data:`ID_STAMP`."""
    return 10**11 + next(_RUNS) * 10**9


def with_id(body: bytes, event_id: int) -> bytes:
    """``body`` with its event id placeholder replaced by ``event_id`` (same width: same length)."""
    return body.replace(_STAMP, str(event_id).encode())


def run_load(spec: LoadSpec) -> dict[str, Any]:
    """Drive one load run (on uvloop when installed) and summarise it."""
    nice = "default"
    if spec.nice:
        try:
            nice = str(os.nice(spec.nice))
        except PermissionError:
            nice = f"default (nice {spec.nice:+d} refused)"
    loop = _event_loop()
    try:
        return loop.run_until_complete(_open_loop(spec) if spec.rate > 0 else _closed_loop(spec)) | {"nice": nice}
    finally:
        loop.close()


def load_in_subprocess(spec: LoadSpec) -> dict[str, Any]:
    """:func:`run_load` in a fresh spawned process, so the generator has its own interpreter."""
    with ProcessPoolExecutor(1, mp_context=multiprocessing.get_context("spawn")) as pool:
        return pool.submit(run_load, spec).result()


Conn = tuple[asyncio.StreamReader, asyncio.StreamWriter]
_FAILURES = (TimeoutError, OSError, asyncio.IncompleteReadError, asyncio.LimitOverrunError, ValueError)


async def _exchange(conn: Conn, request: bytes) -> tuple[int, bytes]:
    reader, writer = conn
    writer.write(request)
    head = await reader.readuntil(b"\r\n\r\n")
    status, length, chunked = int(head[9:12]), 0, False
    for line in head.split(b"\r\n")[1:]:
        name, _, value = line.partition(b":")
        name = name.strip().lower()
        if name == b"content-length":
            length = int(value)
        elif name == b"transfer-encoding":
            chunked = b"chunked" in value.lower()
    if not chunked:
        return status, await reader.readexactly(length)
    body = bytearray()
    while size := int((await reader.readuntil(b"\r\n")).split(b";")[0], 16):
        body += (await reader.readexactly(size + 2))[:-2]
    await reader.readuntil(b"\r\n")
    return status, bytes(body)


async def _connect(port: int) -> Conn:
    return await asyncio.open_connection("127.0.0.1", port)


def _cpu_s() -> float:
    usage = resource.getrusage(resource.RUSAGE_SELF)
    return usage.ru_utime + usage.ru_stime


async def _open_loop(spec: LoadSpec) -> dict[str, Any]:
    total, warm = round(spec.rate * (spec.warmup_s + spec.seconds)), round(spec.rate * spec.warmup_s)
    scheduled = np.arange(total) / spec.rate
    launched, sent, done = (np.full(total, np.nan) for _ in range(3))
    failure: list[str | None] = [None] * total
    pool: asyncio.Queue[Conn] = asyncio.Queue()
    for _ in range(spec.connections):
        pool.put_nowait(await _connect(spec.port))
    start = time.perf_counter() + 0.01

    async def one(i: int) -> None:
        conn = await pool.get()
        sent[i] = time.perf_counter() - start
        try:
            status, body = await asyncio.wait_for(_exchange(conn, spec.request(i)), spec.timeout_s)
        except _FAILURES as exc:
            done[i], failure[i] = time.perf_counter() - start, type(exc).__name__
            conn[1].close()
            with contextlib.suppress(OSError):  # the server is gone: the pool shrinks
                pool.put_nowait(await _connect(spec.port))
            return
        done[i] = time.perf_counter() - start
        pool.put_nowait(conn)
        if status != 200 or spec.expect not in body:
            failure[i] = f"HTTP {status}" if status != 200 else "unexpected body"

    tasks: set[asyncio.Task[None]] = set()
    i, cpu0, wall0 = 0, 0.0, 0.0
    while i < total:
        now = time.perf_counter() - start
        while i < total and scheduled[i] <= now:
            if i == warm:
                cpu0, wall0 = _cpu_s(), now
            launched[i] = now
            task = asyncio.create_task(one(i))
            tasks.add(task)
            task.add_done_callback(tasks.discard)
            i += 1
        if i < total:
            await asyncio.sleep(scheduled[i] - (time.perf_counter() - start))
    cpu, wall = _cpu_s() - cpu0, time.perf_counter() - start - wall0
    if tasks:
        await asyncio.wait(set(tasks), timeout=spec.timeout_s + 1.0)
    cutoff = time.perf_counter() - start
    for task in list(tasks):
        task.cancel()
    await asyncio.gather(*tasks, return_exceptions=True)
    while not pool.empty():
        pool.get_nowait()[1].close()
    return _summary(spec, slice(warm, total), scheduled, launched, sent, done, failure, cutoff, cpu / wall)


async def _closed_loop(spec: LoadSpec) -> dict[str, Any]:
    deadline = spec.warmup_s + spec.seconds
    sent: list[float] = []
    done: list[float] = []
    failure: list[str | None] = []
    start = time.perf_counter()

    async def client(j: int) -> None:
        conn = await _connect(spec.port)
        k = j
        while (t0 := time.perf_counter() - start) < deadline:
            sent.append(t0)
            try:
                status, body = await asyncio.wait_for(_exchange(conn, spec.request(k)), spec.timeout_s)
                failure.append(None if status == 200 and spec.expect in body else f"HTTP {status}")
            except _FAILURES as exc:
                failure.append(type(exc).__name__)
                done.append(time.perf_counter() - start)
                conn[1].close()
                try:
                    conn = await _connect(spec.port)
                except OSError:  # the server is gone: this client stops
                    return
                continue
            done.append(time.perf_counter() - start)
            k += spec.connections
        conn[1].close()

    cpu0 = _cpu_s()
    await asyncio.gather(*(client(j) for j in range(spec.connections)))
    cpu = (_cpu_s() - cpu0) / (time.perf_counter() - start)
    s, d = np.array(sent), np.array(done)
    measured = np.flatnonzero(s >= spec.warmup_s)
    return _summary(spec, measured, s, s, s, d, failure, float(d.max(initial=0.0)), cpu)


def _summary(spec: LoadSpec, measured: Any, scheduled: np.ndarray, launched: np.ndarray, sent: np.ndarray,
             done: np.ndarray, failure: list[str | None], cutoff: float, cpu_share: float) -> dict[str, Any]:
    """Latency from the scheduled send (closed loop: from the send) to the last byte, in ms; a
    request not answered by ``cutoff`` counts with ``cutoff - scheduled`` (a lower bound).
    ``achieved_rps``: good answers (to any request) per second during the measured window."""
    sch, lau, snt, dn = scheduled[measured], launched[measured], sent[measured], done[measured]
    if not len(sch):
        raise RuntimeError(f"no request was sent in the measured window ({spec}); is the server answering?")
    unanswered = np.isnan(dn)
    latency = np.where(unanswered, cutoff - sch, dn - sch) * 1e3
    service = ((dn - snt) * 1e3)[~unanswered]  # from the actual send: what the server (and loopback) took
    kinds = Counter(k for k in np.asarray(failure, dtype=object)[measured] if k)
    if unanswered.sum():
        kinds["unanswered"] = int(unanswered.sum())
    answered_ok = (~unanswered).sum() - sum(v for k, v in kinds.items() if k != "unanswered")
    ok_done = np.array([d for k, d in zip(failure, done, strict=True) if k is None and np.isfinite(d)])
    in_window = int(((ok_done >= sch[0]) & (ok_done < sch[0] + spec.seconds)).sum())  # any request's answer
    written = snt[np.isfinite(snt)]
    lag = (lau - sch) * 1e3
    return {
        "mode": f"open loop, {spec.rate:g}/s, {spec.connections} connections" if spec.rate > 0
        else f"closed loop, {spec.connections} clients",
        "target_rps": spec.rate, "seconds": spec.seconds, "requests": len(sch),
        "ok": int(answered_ok), "errors": dict(kinds), "error_count": int(sum(kinds.values())),
        "ok_total": len(ok_done),
        # sent but with no good answer (cut off, timed out, failed): the server may still have logged them
        "sent_not_ok_total": int(np.isfinite(sent).sum()) - len(ok_done),
        "achieved_rps": in_window / spec.seconds,
        "sent_rps": _rate(written),
        "launched_rps": _rate(lau),
        "latency_ms": {q: float(np.percentile(latency, p)) for q, p in (("p50", 50), ("p90", 90), ("p99", 99))}
        | {"max": float(latency.max()), "mean": float(latency.mean())},
        "lower_bounds": bool(unanswered.any()),
        "from_send_ms": {"p50": float(np.percentile(service, 50)), "p99": float(np.percentile(service, 99))}
        if len(service) else {"p50": float("nan"), "p99": float("nan")},
        "dispatch_lag_ms": {"p50": float(np.percentile(lag, 50)), "p99": float(np.percentile(lag, 99)),
                            "max": float(lag.max())},
        "generator_cpu_share": float(cpu_share),
        "latencies_us": (latency * 1e3).astype(np.int64).tolist(),
    }


def _rate(times: np.ndarray) -> float:
    """Events per second over the span of ``times`` (seconds)."""
    return float((len(times) - 1) / (times.max() - times.min())) if len(times) > 1 else 0.0


# --- end to end -----------------------------------------------------------------------------------


def load_run(server: ServerProc, what: str, path: str, bodies: list[bytes], expect: bytes, rate: float,
             seconds: float, args: argparse.Namespace, answered: Counter[str]) -> dict[str, Any]:
    """One load run against ``server``, with the server's CPU over it (all requests, warm-up included)."""
    method = "POST" if bodies else "GET"
    requests = (tuple(http_request(server.port, method, path, b) for b in bodies)
                or (http_request(server.port, "GET", path),))
    closed = rate <= 0
    ids = first_id() if any(_STAMP in b for b in bodies) else 0
    spec = LoadSpec(server.port, requests, expect, rate, seconds, min(args.warmup, seconds) if closed else args.warmup,
                    args.capacity_connections if closed else args.connections, args.timeout, args.generator_nice, ids)
    before = server.usage()
    log.info("%s %s: %s for %g s", server.name, path, "closed loop" if closed else f"{rate:g}/s", seconds)
    result = load_in_subprocess(spec)
    after = server.usage()
    answered[path] += result["ok_total"]
    answered[f"{path} sent, no good answer"] += result["sent_not_ok_total"]
    cpu = {k: v["cpu_s"] - before.get(k, {"cpu_s": 0.0})["cpu_s"] for k, v in after.items()}
    requests_total = max(1, result["ok_total"])
    return {"server": server.name, "what": what, "path": path, **result,
            "server_cpu_s": cpu, "server_cpu_ms_per_request": 1e3 * sum(cpu.values()) / requests_total}


def check_scores(port: int, path: str, body: bytes, expected: np.ndarray) -> tuple[str, int]:
    """``same`` if one many-row request gets the in-process model's scores (relative tolerance 1e-5:
    a GPU server may round differently), else what differs; and the rows the server answered."""
    status, raw = http_call(port, "POST", path, body)
    if status != 200:
        return f"HTTP {status}: {raw[:200]!r}", 0
    got = json.loads(raw)["predictions"]
    # a dict (tidemark, the fraud pyfunc), a bare score, or predict_proba's row (P(positive) last)
    scores = np.array([p.get("score", p.get("fraud_probability")) if isinstance(p, dict) else
                       p[-1] if isinstance(p, list) else p for p in got], dtype=np.float64)
    if len(scores) != len(expected):
        return f"DIFFERENT: {len(scores)} scores for {len(expected)} rows", len(scores)
    same = np.allclose(scores, expected, rtol=1e-5, atol=0.0)
    return "same" if same else f"DIFFERENT (largest gap {np.max(np.abs(scores - expected)):.3g})", len(scores)


@dataclass(frozen=True)
class Target:
    """One server under test and what it is sent."""

    name: str
    cmd: list[str]
    port: int
    ready_path: str
    path: str                 # the scoring endpoint
    bodies: list[bytes]       # one-row requests, as many as the pool has rows
    check_body: bytes         # ``--check-rows`` rows in one request
    what: str
    http_path: str            # an endpoint that only exercises HTTP
    http_expect: bytes
    reads_store: bool = True  # reads the features online (so its expected scores are computed at the check)
    expect: bytes = b'"predictions"'  # what every good answer holds (tidemark: that the payment was pushed too)


def targets(settings: Settings, version: str, pool: RequestPool, columns: list[str], n: int,
            args: argparse.Namespace) -> list[Target]:
    """``tidemark serve`` with each ``--workers`` count (join keys and request fields in, features
    from Redis), then ``mlflow models serve`` of the same version with the first count of workers
    (request fields and the same feature values in the request)."""
    from tests.integration.redis_servers import free_port

    rows = range(len(pool.rows))
    ours = [Target(f"tidemark w{w}", tidemark_cmd(port, w), port, "/readyz", "/v1/predict",
                   [pool.tidemark_body(i) for i in rows], json.dumps({"rows": pool.rows[:n]}).encode(),
                   "one-row predict", "/healthz", b"alive", expect=b'"pushed":true') for w, port in ((w, free_port()) for w in args.workers)]
    if args.no_peer:
        return ours
    peer, workers = free_port(), args.workers[0]
    return [*ours, Target(f"mlflow w{workers}", mlflow_cmd(settings, version, peer, workers), peer, "/ping",
                          "/invocations", [pool.peer_body(i, columns) for i in rows],
                          dataframe_split(pool.inputs.iloc[:n], columns),
                          "one-row invocations, features in the request", "/ping", b"", reads_store=False)]


def run_server(target: Target, settings: Settings, expected: Callable[[bool], np.ndarray], root: Path,
               args: argparse.Namespace) -> tuple[list[dict[str, Any]], dict[str, Any]]:
    """Start ``target``, check its scores, then the load runs: one-row requests at ``--rate``, the
    HTTP-only endpoint at the same rate, and the closed-loop capacity run; stop it.

    ``expected(now)``: the in-process model's scores of the check rows, with the online values read
    now (``now`` true: for a server that reads them itself, just before its check) or those the
    request pool was made with (the peer, which is sent those)."""
    ours = target.name.startswith("tidemark")
    logged_before = logged_rows(settings.offline_dir / "prediction_log") if ours else 0
    server = start_server(target.name.replace(" ", "-"), target.cmd, server_env(settings), target.port,
                          target.ready_path, root, args.start_timeout)
    server.name = target.name
    answered: Counter[str] = Counter()
    info: dict[str, Any] = {}
    runs = []
    try:
        info["tree_at_start"], info["ready_s"] = server.usage(), server.ready_s
        # Nothing else writes to the store between this read and the check: the previous server is
        # stopped, the load runs come after.
        info["scores"], checked_rows = check_scores(target.port, target.path, target.check_body,
                                                    expected(target.reads_store))
        answered[target.path] += checked_rows
        predict = (target.path, target.bodies, target.expect)
        runs.append(load_run(server, target.what, *predict, args.rate, args.seconds, args, answered))
        if args.http_seconds > 0:
            runs.append(load_run(server, f"GET {target.http_path} (HTTP alone)", target.http_path, [],
                                 target.http_expect, args.rate, args.http_seconds, args, answered))
        if args.capacity_seconds > 0:
            runs.append(load_run(server, f"{target.what}, capacity", *predict, 0, args.capacity_seconds, args,
                                 answered))
        info["tree_at_end"] = server.usage()
    finally:
        server.stop()
    info["answered_rows"] = answered[target.path]
    info["unsure_rows"] = answered[f"{target.path} sent, no good answer"]
    if ours:
        info["logged_rows"] = logged_rows(settings.offline_dir / "prediction_log") - logged_before
    return runs, info


def logged_rows(root: Path) -> int:
    """Rows in the prediction log's Parquet files (0 if there are none)."""
    import pyarrow.dataset as ds

    if not root.exists() or not any(root.rglob("*.parquet")):
        return 0
    return int(ds.dataset(root, format="parquet", partitioning="hive").count_rows())


# --- reporting ----------------------------------------------------------------------------------


def _aligned(rows: list[list[str]], right: set[int]) -> str:
    widths = [max(len(r[i]) for r in rows) for i in range(len(rows[0]))]
    lines = ["  ".join(c.rjust(w) if i in right else c.ljust(w) for i, (c, w) in enumerate(zip(r, widths, strict=True)))
             .rstrip() for r in rows]
    lines.insert(1, "  ".join("-" * w for w in widths))
    return "\n".join(lines)


def forward_table(rows: list[dict[str, Any]]) -> str:
    header = ["device", "path", "batch", "p50 ms", "p99 ms", "rows/s at p50", "calls"]
    body = [[r["device"], r["path"], str(r["batch"]), f"{r['p50']:.3f}", f"{r['p99']:.3f}", f"{r['rows_per_s']:,.0f}",
             str(r["n"])] for r in rows]
    return _aligned([header, *body], right={2, 3, 4, 5, 6})


def stage_table(floors: dict[str, dict[str, dict[str, float]]], stages: dict[str, dict[str, float]]) -> str:
    header = ["one row, in process", "p50 ms", "p99 ms", "calls"]
    body = []
    for device, f in floors.items():
        body += [[f"Redis MGET of the request's {f['keys']['n']} keys (redis-py)", f"{f['mget']['p50']:.3f}",
                  f"{f['mget']['p99']:.3f}", str(f["mget"]["n"])],
                 [f"module forward, one row ({device}, with copies)", f"{f['forward']['p50']:.3f}",
                  f"{f['forward']['p99']:.3f}", str(f["forward"]["n"])],
                 [f"floor: MGET + forward ({device})", f"{f['floor']['p50']:.3f}", f"{f['floor']['p99']:.3f}",
                  str(f["floor"]["n"])]]
    for name, s in stages.items():
        body.append([name, f"{s['p50']:.3f}", f"{s['p99']:.3f}", str(s["n"]), f"{s['cpu']:.3f}"])
    table = _aligned([[*header, "CPU ms/call"], *(r + [""] * (5 - len(r)) for r in body)], right={1, 2, 3, 4})
    if RAW_ASGI in stages and LAYER in stages:
        table += (f"\nthe HTTP layer alone: {stages[LAYER]['cpu'] - stages[RAW_ASGI]['cpu']:.3f} ms of CPU per request "
                  f"over a raw ASGI app ({stages[LAYER]['p50'] - stages[RAW_ASGI]['p50']:.3f} ms at p50)")
    return table


def load_table(runs: list[dict[str, Any]]) -> str:
    header = ["server", "request", "load", "sent/s", "ok/s", "p50 ms", "p90 ms", "p99 ms", "max ms", "errors",
              "p99 from send", "server CPU ms/req", "gen lag p99 ms", "gen CPU"]
    body = []
    for r in runs:
        lat, mark = r["latency_ms"], "≥" if r["lower_bounds"] else ""
        errors = ", ".join(f"{k} {v}" for k, v in r["errors"].items()) or "0"
        body.append([r["server"], r["what"], r["mode"], f"{r['sent_rps']:.0f}", f"{r['achieved_rps']:.0f}",
                     *(f"{mark}{lat[q]:.2f}" for q in ("p50", "p90", "p99", "max")), errors,
                     f"{r['from_send_ms']['p99']:.2f}", f"{r['server_cpu_ms_per_request']:.2f}",
                     f"{r['dispatch_lag_ms']['p99']:.2f}",
                     f"{r['generator_cpu_share']:.0%}"])
    return _aligned([header, *body], right={3, 4, 5, 6, 7, 8, 10, 11, 12, 13})


def goals(args: argparse.Namespace, runs: list[dict[str, Any]], floor: dict[str, dict[str, float]],
          checks: dict[str, Any]) -> list[dict[str, str]]:
    """Issue 18's goals and the checks behind the comparison, each PASS / FAIL / NOT RUN (INFO: the
    same measure for another worker count, for comparison)."""
    out = []
    cores = len(os.sched_getaffinity(0))
    ours = [name for name in checks if name.startswith("tidemark")]
    for name in ours:
        run = run_of(runs, name, open_loop=True)
        lat, f = run["latency_ms"], floor["floor"]
        goal = (f"{name}: one-row request p99 under {GOAL_P99_MS:g} ms at {GOAL_RATE:g} requests/s with zero errors "
                "(2 CPU cores)")
        detail = (f"p99 {lat['p99']:.2f} ms ({run['from_send_ms']['p99']:.2f} ms from the actual send), p50 "
                  f"{lat['p50']:.2f} ms, {run['error_count']} errors, "
                  f"{run['achieved_rps']:.0f} ok/s of {run['target_rps']:g}/s over {run['seconds']:g} s; "
                  f"floor p50 {f['p50']:.3f} ms / p99 {f['p99']:.3f} ms: p50 {lat['p50'] / f['p50']:.1f}x, "
                  f"p99 {lat['p99'] / f['p99']:.1f}x the floor")
        if cores != 2:
            detail += f" (this machine has {cores} cores)"
        if run["target_rps"] < GOAL_RATE or run["seconds"] < 20:
            status = "NOT RUN"
            detail += f" (rate {run['target_rps']:g}/s, {run['seconds']:g} s: run without --quick)"
        else:
            status = _verdict(lat["p99"] < GOAL_P99_MS and run["error_count"] == 0, name == ours[0])
        out.append({"goal": goal, "status": status, "detail": detail})
    main = run_of(runs, ours[0], open_loop=True)
    lag = main["dispatch_lag_ms"]
    kept_up = main["launched_rps"] >= 0.99 * main["target_rps"] and lag["p99"] < 1.0
    out.append({"goal": "the load generator kept up (issued at least 99% of the rate, dispatch lag p99 under 1 ms)",
                "status": "PASS" if kept_up else "FAIL",
                "detail": f"issued {main['launched_rps']:.1f}/s of {main['target_rps']:g}/s"
                          + (f" (written {main['sent_rps']:.1f}/s: the rest waited for a free connection)"
                             if main["sent_rps"] < 0.99 * main["launched_rps"] else "")
                          + f", dispatch lag p50 "
                          f"{lag['p50']:.3f} ms, p99 {lag['p99']:.3f} ms, max {lag['max']:.2f} ms, "
                          f"{main['generator_cpu_share']:.0%} of a core"})
    for name in ours:
        cpu = {loop: run_of(runs, name, open_loop=loop) for loop in (True, False)}
        shown = "; ".join(f"{r['mode']}: {r['server_cpu_ms_per_request']:.2f} ms" for r in cpu.values() if r)
        best = min(r["server_cpu_ms_per_request"] for r in cpu.values() if r)
        out.append({"goal": f"{name}: server CPU per one-row request at most {GOAL_CPU_MS:g} ms (process tree)",
                    "status": _verdict(best <= GOAL_CPU_MS, name == ours[0]), "detail": shown})
    peer_name = next((name for name in checks if name.startswith("mlflow")), None)
    if peer_name is not None:
        capacity, peer = run_of(runs, ours[0], open_loop=False), run_of(runs, peer_name, open_loop=False)
        if capacity and peer:
            ratio = capacity["achieved_rps"] / max(peer["achieved_rps"], 1e-9)
            out.append({"goal": f"{ours[0]} at least {GOAL_PEER_RATIO:g}x the throughput of {peer_name} "
                                "(closed-loop capacity, same workers)",
                        "status": "PASS" if ratio >= GOAL_PEER_RATIO else "FAIL",
                        "detail": f"{capacity['achieved_rps']:.0f} against {peer['achieved_rps']:.0f} ok/s: "
                                  f"{ratio:.1f}x"})
    for name, info in checks.items():
        verdict = info["scores"]
        out.append({"goal": f"{name} answers the in-process model's scores for {args.check_rows} rows",
                    "status": "PASS" if verdict == "same" else "FAIL", "detail": verdict})
    for name in ours:
        info = checks[name]
        logged, answered, unsure = info["logged_rows"], info["answered_rows"], info["unsure_rows"]
        out.append({"goal": f"the prediction log holds every row {name} answered",
                    "status": "PASS" if answered <= logged <= answered + unsure else "FAIL",
                    "detail": f"{logged:,} rows logged, {answered:,} answered"
                              + (f", {unsure:,} more sent without a good answer (they may be logged)"
                                 if unsure else "")})
    return out


def _verdict(ok: bool, main: bool) -> str:
    return ("PASS" if ok else "FAIL") if main else ("INFO ok" if ok else "INFO no")


def run_of(runs: list[dict[str, Any]], server: str, *, open_loop: bool) -> dict[str, Any]:
    """``server``'s scoring run, open loop (at ``--rate``) or closed (capacity); {} if not run."""
    return next((r for r in runs if r["server"] == server and r["path"] in ("/v1/predict", "/invocations")
                 and (r["target_rps"] > 0) == open_loop), {})


def comparison(runs: list[dict[str, Any]]) -> list[str]:
    """Each tidemark server against mlflow serve, run by run."""
    lines = []
    servers = list(dict.fromkeys(r["server"] for r in runs))
    peer_name = next((s for s in servers if s.startswith("mlflow")), None)
    for name in (s for s in servers if s.startswith("tidemark") and peer_name):
        for open_loop in (True, False):
            ours, peer = run_of(runs, name, open_loop=open_loop), run_of(runs, str(peer_name), open_loop=open_loop)
            if not ours or not peer:
                continue
            o, p = ours["latency_ms"], peer["latency_ms"]
            lines.append(f"{ours['mode']}: {name} p50 {o['p50']:.2f} / p99 {o['p99']:.2f} ms at "
                         f"{ours['achieved_rps']:.0f} ok/s; {peer_name} p50 {p['p50']:.2f} / p99 {p['p99']:.2f} ms at "
                         f"{peer['achieved_rps']:.0f} ok/s ({peer['error_count']} errors): p50 "
                         f"{p['p50'] / o['p50']:.1f}x, p99 {p['p99'] / o['p99']:.1f}x, throughput "
                         f"{ours['achieved_rps'] / max(peer['achieved_rps'], 1e-9):.2f}x; server CPU "
                         f"{ours['server_cpu_ms_per_request']:.2f} vs {peer['server_cpu_ms_per_request']:.2f} ms "
                         "per answered request")
    return lines


def trees(checks: dict[str, Any]) -> list[str]:
    """What each server ran as (processes by name, CPU seconds and RSS at the end), and its start."""
    lines = []
    for server, info in checks.items():
        tree = info.get("tree_at_end") or info.get("tree_at_start") or {}
        parts = [f"{name} x{int(u['processes'])}: {u['cpu_s']:.1f} CPU s, {u['rss_mib']:.0f} MiB"
                 for name, u in tree.items()]
        lines.append(f"{server}: ready {info['ready_s']:.1f} s after start; process tree at the end: "
                     + "; ".join(parts))
    return lines


def environment(args: argparse.Namespace, choice: ModelChoice, settings: Settings, rows: int) -> dict[str, str]:
    import mlflow
    import redis
    import torch
    import uvicorn

    cpuinfo = Path("/proc/cpuinfo")
    cpu = next((line.split(":", 1)[1].strip() for line in cpuinfo.read_text().splitlines()
                if line.startswith("model name")), platform.processor()) if cpuinfo.exists() else ""
    loaded = [m for m in ("uvloop", "httptools") if _importable(m)]
    cuda = f"available ({torch.cuda.get_device_name(0)})" if torch.cuda.is_available() else "not available"
    spec = choice.model.spec
    return {
        "machine": f"{len(os.sched_getaffinity(0))} cores (nproc), {cpu}; load average "
                   + ", ".join(f"{x:.2f}" for x in os.getloadavg()),
        "versions": f"torch {torch.__version__} ({torch.get_num_threads()} threads"
                    f"{', --torch-threads, servers too' if args.torch_threads else ', its default'}), "
                    f"MLflow {mlflow.__version__}, "
                    f"uvicorn {uvicorn.__version__} ({' + '.join(loaded) or 'asyncio + h11'}), redis-py "
                    f"{redis.__version__}, numpy {np.__version__}, Python {platform.python_version()}",
        "torch.cuda": cuda + "; the server puts the model on "
                      + ("cuda (FraudModel.load's default)" if torch.cuda.is_available() else "the CPU"),
        "model": f"{choice.source}; hidden {spec.hidden}, {len(spec.numeric)} numeric + {len(spec.categorical)} "
                 f"categorical inputs, {len(choice.features)} online features from "
                 f"{len({f.split(':')[0] for f in choice.features})} views",
        "data": f"{args.customers:,} customers, {args.merchants:,} merchants ({rows:,} offline rows, materialized); "
                f"{args.pool:,} distinct request rows, {UNKNOWN_SHARE:.0%} for unknown customers; each request sent "
                f"carries a {EVENT_ID} of its own, and tidemark's answer counts only when it says the payment was "
                "pushed to the real-time windows",
        "load": f"a separate process (asyncio{' on uvloop' if 'uvloop' in loaded else ''}), open loop at "
                f"{args.rate:g}/s "
                f"over {args.connections} keep-alive connections, {args.warmup:g} s warm-up then {args.seconds:g} s; "
                f"request timeout {args.timeout:g} s; capacity: {args.capacity_connections} clients back to back"
                + (f"; generator nice {args.generator_nice:+d}" if args.generator_nice else ""),
        "home": str(settings.home),
        "command": shlex.join([os.path.relpath(sys.executable), *sys.argv]),
    }


def _importable(module: str) -> bool:
    return importlib.util.find_spec(module) is not None


def print_report(env: dict[str, str], forward: list[dict[str, Any]], floors: dict[str, Any], stages: dict[str, Any],
                 runs: list[dict[str, Any]], checks: dict[str, Any], verdicts: list[dict[str, str]]) -> None:
    for key, value in env.items():
        print(f"{key}: {value}")
    print("\nthe model alone (predict_proba: pandas frame in, encoding and copies included; module forward: "
          "tensors already on the device, inference mode)")
    print(forward_table(forward))
    print("\none-row request in this process: the floor, then the app without a socket, Scorer.score and its parts")
    print(stage_table(floors, stages))
    print("\nend to end over loopback HTTP (latency from each request's scheduled send to its last byte; "
          "server CPU: its whole process tree, warm-up included; gen: the load generator's own figures)")
    print(load_table(runs))
    for line in [*comparison(runs), *trees(checks)]:
        print(line)
    print()
    for g in verdicts:
        print(f"{g['status']:<7} {g['goal']}: {g['detail']}")


# --- command line -------------------------------------------------------------------------------


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0],
                                formatter_class=argparse.ArgumentDefaultsHelpFormatter)
    p.add_argument("--quick", action="store_true", help="smoke test: 50 requests/s for 3 s, small data, few calls")
    p.add_argument("--rate", type=float, default=None, help=f"requests/s of the open-loop runs (default {GOAL_RATE:g})")
    p.add_argument("--seconds", type=float, default=None, help="measured seconds of the predict runs (default 20)")
    p.add_argument("--warmup", type=float, default=None, help="seconds at the same rate before measuring (default 5)")
    p.add_argument("--http-seconds", type=float, default=None,
                   help="seconds of the /healthz and /ping runs (default 10; 0 skips them)")
    p.add_argument("--capacity-seconds", type=float, default=None,
                   help="seconds of the closed-loop capacity runs (default 10; 0 skips them)")
    p.add_argument("--capacity-connections", type=int, default=4, help="clients of the capacity runs")
    p.add_argument("--connections", type=int, default=16, help="keep-alive connections of the open-loop runs")
    p.add_argument("--timeout", type=float, default=5.0, help="seconds a request may take before it counts as failed")
    p.add_argument("--customers", type=int, default=None, help="customers in the online store (default 25,000)")
    p.add_argument("--merchants", type=int, default=None, help="merchants in the online store (default 2,500)")
    p.add_argument("--pool", type=int, default=None, help="distinct request rows, cycled (default 4,096)")
    p.add_argument("--forward-calls", type=int, default=None, help="calls per forward measurement (default 2,000)")
    p.add_argument("--forward-seconds", type=float, default=None, help="at most this long per forward measurement "
                   "(default 2)")
    p.add_argument("--inprocess-calls", type=int, default=None, help="calls per floor and stage (default 2,000)")
    p.add_argument("--check-rows", type=int, default=50, help="rows whose scores both servers must agree on")
    p.add_argument("--model", choices=("auto", "trained", "built"), default="auto",
                   help="trained: the newest model in --train-home; built: default architecture, fitted "
                        "preprocessing, untrained weights; auto: trained if there is one")
    p.add_argument("--train-home", type=Path, default=TRAIN_HOME, help="benchmarks/train.py's home (only read)")
    p.add_argument("--no-peer", action="store_true", help="leave mlflow models serve out")
    p.add_argument("--workers", type=lambda text: [int(w) for w in text.split(",")], default=[2, 1],
                   help="tidemark serve --workers counts to run, comma-separated; the first is judged against "
                        "the goals, and mlflow serve gets as many workers")
    p.add_argument("--torch-threads", type=int, default=None,
                   help="torch threads here and OMP_NUM_THREADS for both servers (default: torch's, one per core)")
    p.add_argument("--generator-nice", type=int, default=0,
                   help="nice increment of the load generator; e.g. -5 (needs root) so that its sends are not "
                        "held up by the server on shared cores")
    p.add_argument("--start-timeout", type=float, default=300.0, help="seconds a server may take to become ready")
    p.add_argument("--workdir", type=Path, default=None, help="scratch home, kept (default: a temp dir, removed)")
    p.add_argument("--seed", type=int, default=7)
    p.add_argument("--json", type=Path, default=None, metavar="PATH", help="also write every figure here")
    args = p.parse_args(argv)
    quick = args.quick
    defaults = {"rate": (GOAL_RATE, 50.0), "seconds": (20.0, 3.0), "warmup": (5.0, 1.0), "http_seconds": (10.0, 2.0),
                "capacity_seconds": (10.0, 2.0), "customers": (25_000, 2_000), "merchants": (2_500, 200),
                "pool": (4_096, 512), "forward_calls": (2_000, 200), "forward_seconds": (2.0, 0.3),
                "inprocess_calls": (2_000, 300)}
    for name, (full, small) in defaults.items():
        if getattr(args, name) is None:
            setattr(args, name, small if quick else full)
    if args.rate <= 0 or args.seconds <= 0:
        p.error("--rate and --seconds must be positive")
    return args


def setup(args: argparse.Namespace, root: Path, redis_url: str) -> tuple[Any, ...]:
    """Scratch home, offline tables, Feast apply + materialization, the model registered and promoted."""
    import pandas as pd
    from pit_data import quiet

    from features.sdk import FeatureClient
    from tidemark.settings import Settings, SparkSettings

    settings = Settings(home=root / "home", spark=SparkSettings(master="local[2]", driver_memory="2g",
                                                                shuffle_partitions=4), redis_url=redis_url)
    choice = None
    if args.model in ("auto", "trained"):
        choice = trained_model(args.train_home) if args.train_home.is_dir() else None
        if choice is None and args.model == "trained":
            raise SystemExit(f"no trained model under {args.train_home}; run benchmarks/train.py or pass --model built")
    vocab = choice.vocabulary if choice is not None else VOCABULARY
    now = pd.Timestamp.now(tz="UTC").floor("s")
    rows = write_offline(settings.offline_dir, settings.raw_dir, vocab, args, now)
    fc = FeatureClient(settings)
    log.info("applying the Feast definitions and materializing %s offline rows (Spark)", f"{rows:,}")
    with quiet():
        fc.apply()
        fc.materialize_incremental(now.to_pydatetime(), progress=False)
    stop_spark()
    from examples.fraud.feature_views import DEFAULT_FEATURES

    pool = request_pool(fc, choice.features if choice is not None else DEFAULT_FEATURES, vocab, args)
    if choice is None:
        choice = built_model(pool.inputs, args.seed)
    with quiet():
        version = register(settings, choice)
    return settings, fc, choice, pool, version, rows


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(name)s %(message)s", stream=sys.stderr)
    for noisy in ("feast", "mlflow", "alembic", "py4j", "urllib3"):
        logging.getLogger(noisy).setLevel(logging.WARNING)
    # This file is called serving.py: with its folder first on sys.path, ``import serving`` would find it
    # instead of the package. The repo root goes first; pit_data stays importable from the folder.
    here = str(Path(__file__).resolve().parent)
    sys.path[:] = [str(REPO), *(p for p in sys.path if os.path.abspath(p or ".") != here), here]
    from tests.integration.redis_servers import start_redis

    if args.torch_threads:  # before torch is imported: this process and both servers (they inherit it)
        os.environ["OMP_NUM_THREADS"] = os.environ["MKL_NUM_THREADS"] = str(args.torch_threads)
    began = time.perf_counter()
    root = Path(args.workdir or tempfile.mkdtemp(prefix="tidemark-bench-serving-")).resolve()
    redis_server = start_redis(root / "redis")
    try:
        settings, fc, choice, pool, version, rows = setup(args, root, redis_server.url)
        n, features = min(args.check_rows, len(pool.rows)), choice.features

        def expected(now: bool) -> np.ndarray:
            inputs = model_inputs(fc, pool.rows[:n], features) if now else pool.inputs.iloc[:n]
            return choice.model.predict_proba(inputs)
        gc.collect()
        gc.freeze()
        log.info("timing the model alone")
        forward = measure_forward(choice, pool, args)
        log.info("timing the floor and the in-process stages")
        floors = {device: measure_floor(settings, fc, choice, pool, args, device) for device in devices()}
        stages = measure_stages(settings, fc, pool, root, args)
        columns = list(choice.signature.inputs.input_names()) if choice.signature else choice.model.spec.columns
        runs, checks = [], {}
        for target in targets(settings, version, pool, columns, n, args):
            target_runs, checks[target.name] = run_server(target, settings, expected, root, args)
            runs += target_runs
        server_device = devices()[-1]
        env = environment(args, choice, settings, rows)
        verdicts = goals(args, runs, floors[server_device], checks)
        print_report(env, forward, floors, stages, runs, checks, verdicts)
        print(f"\ntotal wall time {time.perf_counter() - began:.0f} s")
        if args.json:
            args.json.write_text(json.dumps({**env, "forward": forward, "floor": floors, "stages": stages,
                                             "runs": runs, "checks": checks, "goals": verdicts}, indent=1) + "\n")
    finally:
        redis_server.stop()
        if args.workdir is None:
            shutil.rmtree(root, ignore_errors=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
