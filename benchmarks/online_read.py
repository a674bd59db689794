"""Online reads and materialization: tidemark's packed Redis store against Feast's ``redis`` store.

One redis-server (started here, on a free loopback port) holds the same generated data three times:
once through Feast's built-in ``redis`` store, once through ``PackedRedisOnlineStore`` written by
``features.materialize.materialize_views`` (what ``FeatureClient.materialize`` runs), once through the plugin written by Feast's own
``materialize``. All Feast repos read the same Parquet through ``SparkAsofOfflineStore``. Times
materialization, then per-call read latency (p50/p99) for batches of entities through Feast's
``get_online_features(...).to_dict()`` on both stores, tidemark's fast path
(``OnlineReader.read_matrix``) and raw redis-py floors; checks that every path returns the
generated values. Prints a table and a PASS/FAIL line per goal.

    .venv/bin/python benchmarks/online_read.py                                   # 100k entities
    .venv/bin/python benchmarks/online_read.py --entities 5000 --iterations-scale 0.1   # smoke test
"""

from __future__ import annotations

import argparse
import gc
import json
import logging
import os
import platform
import shlex
import shutil
import sys
import tempfile
import time
from collections.abc import Callable
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
from pit_data import quiet  # the benchmark runs as a script: its folder is on sys.path

log = logging.getLogger("online_read")

KEY = "user_id"
VIEWS = ("user_stats", "user_activity", "user_risk")
COVERAGE = {"user_stats": 1.0, "user_activity": 0.95, "user_risk": 0.8}  # share of users with rows
TTL = timedelta(days=1)
NULL_SHARE, UNKNOWN_SHARE, INT_SHARE = 0.02, 0.03, 0.3
ITERATIONS = {1: 2000, 100: 300, 1000: 100}
US = 1_000_000


# --- data ---------------------------------------------------------------------------------------


def feature_specs(view: str, per_view: int) -> list[tuple[str, str]]:
    """(name, kind) of ``view``'s features: float64 first, the last ~30% int64."""
    n_int = round(per_view * INT_SHARE)
    short = view.removeprefix("user_")
    return [(f"{short}_{i:02d}", "int64" if i >= per_view - n_int else "float64") for i in range(per_view)]


def write_view(folder: Path, view: str, args: argparse.Namespace, now_us: int,
               rng: np.random.Generator) -> tuple[np.ndarray, np.ndarray]:
    """Write ``view``'s history (``--rows-per-entity`` rows per covered user, all in the last 6 h)
    as Parquet; returns (users, their newest values as float64 with NaN for nulls)."""
    specs = feature_specs(view, args.features_per_view)
    users = np.flatnonzero(rng.random(args.entities) < COVERAGE[view])
    k = args.rows_per_entity
    ago = np.sort(rng.integers(60 * US, 6 * 3600 * US, (len(users), k)), axis=1) + np.arange(k)  # distinct
    event = now_us - ago  # column 0 is each user's newest row
    created = event + rng.integers(1, 30 * US, event.shape)
    values = [rng.standard_normal(event.shape) * 100 if kind == "float64" else rng.integers(0, 10_000, event.shape)
              for _, kind in specs]
    nulls = [rng.random(event.shape) < NULL_SHARE for _ in specs]
    order = rng.permutation(event.size)  # rows in no particular order on disk
    columns = {KEY: pa.array(np.repeat(users, k)[order], pa.int64()),
               "event_timestamp": _us(event.ravel()[order]), "created": _us(created.ravel()[order])}
    for (name, _), v, null in zip(specs, values, nulls, strict=True):
        columns[name] = pa.array(v.ravel()[order], mask=null.ravel()[order])
    (folder / view).mkdir(parents=True)
    pq.write_table(pa.table(columns), folder / view / "part-0.parquet", coerce_timestamps="us")
    newest = np.stack([np.where(null[:, 0], np.nan, v[:, 0]) for v, null in zip(values, nulls, strict=True)], axis=1)
    return users, newest.astype(np.float64)


def _us(micros: np.ndarray) -> pa.Array:
    return pa.array(micros.astype("datetime64[us]"), pa.timestamp("us", tz="UTC"))


def write_data(folder: Path, args: argparse.Namespace, now_us: int) -> tuple[np.ndarray, int, int]:
    """All views' Parquet; returns the expected online matrix float64[entities, features] (NaN: no
    value), the offline row count and the online value count (users x views with a row)."""
    rng = np.random.default_rng(args.seed)
    per_view = args.features_per_view
    expected = np.full((args.entities, per_view * len(VIEWS)), np.nan)
    online = 0
    for v, view in enumerate(VIEWS):
        users, newest = write_view(folder, view, args, now_us, rng)
        expected[users, v * per_view:(v + 1) * per_view] = newest
        online += len(users)
    return expected, online * args.rows_per_entity, online


# --- Feast repos --------------------------------------------------------------------------------


def definitions(data: Path, per_view: int) -> list[Any]:
    """The ``user`` entity and the three feature views (TTL one day) over ``data``."""
    from feast import Entity, FeatureView, Field, ValueType
    from feast.infra.offline_stores.contrib.spark_offline_store.spark_source import SparkSource
    from feast.types import Float64, Int64

    user = Entity(name="user", join_keys=[KEY], value_type=ValueType.INT64)
    views = [FeatureView(
        name=view, entities=[user], ttl=TTL,
        schema=[Field(name=n, dtype=Float64 if k == "float64" else Int64) for n, k in feature_specs(view, per_view)],
        source=SparkSource(name=f"{view}_src", path=str(data / view), file_format="parquet",
                           timestamp_field="event_timestamp", created_timestamp_column="created"),
    ) for view in VIEWS]
    return [user, *views]


def open_store(root: Path, project: str, online: dict[str, Any], defs: list[Any]) -> Any:
    """A FeatureStore (file registry, tidemark's Spark offline store) with ``defs`` applied."""
    from feast import FeatureStore
    from feast.repo_config import RepoConfig

    config = RepoConfig(project=project, provider="local", repo_path=str(root),
                        registry={"registry_type": "file", "path": str(root / f"{project}.db")},
                        offline_store={"type": "features.offline_store.SparkAsofOfflineStore"},
                        online_store=online, entity_key_serialization_version=3)
    store = FeatureStore(config=config)
    with quiet():
        store.apply(defs)
    return store


# --- materialization ----------------------------------------------------------------------------


def materialize_all(stores: dict[str, Any], spark: Any, start: datetime, end: datetime,
                    partitions: int | None) -> dict[str, float]:
    """Seconds per way of materializing every view over ``[start, end]``, after an untimed warm-up
    over an empty window (first Spark jobs, Python workers, imports). ``partitions``: passed to
    ``materialize_views`` (None: its default)."""
    from features.materialize import Window, materialize_views

    def ours(lo: datetime, hi: datetime) -> None:  # what FeatureClient.materialize runs
        store = stores["ours"]
        work = [(store.get_feature_view(view), Window(lo, hi)) for view in VIEWS]
        for result in materialize_views(spark, store, work, partitions=partitions, progress=False):
            log.info("ours %s: %s", result.view, result.counts)

    runs: dict[str, Callable[[datetime, datetime], None]] = {
        "feast": lambda lo, hi: stores["feast"].materialize(lo, hi),
        "ours": ours,
        "plugin": lambda lo, hi: stores["plugin"].materialize(lo, hi),
    }
    seconds = {}
    for name, run in runs.items():
        with quiet():
            run(start - timedelta(days=30), start - timedelta(days=29))
            gc.collect()
            started = time.perf_counter()
            run(start, end)
        seconds[name] = time.perf_counter() - started
        log.info("materialize %s: %.1f s", name, seconds[name])
    return seconds


# --- read paths ---------------------------------------------------------------------------------


@dataclass(frozen=True)
class ReadPath:
    """One way of reading: ``prepare`` (untimed) turns entity ids into its input, ``run`` is timed."""

    name: str
    what: str
    prepare: Callable[[np.ndarray], Any]
    run: Callable[[Any], Any]


def read_paths(stores: dict[str, Any], refs: list[str], raw: Any) -> list[ReadPath]:
    """The paths (a), (b), (c), (c'), (d), (d'), (d'') of the module docstring."""
    from features.online_keys import entity_ids, key_prefix, view_keys
    from features.online_reader import OnlineReader
    from features.online_store import connect
    from features.online_views import OnlineView

    def feast_call(store: Any) -> Callable[[Any], Any]:
        return lambda rows: store.get_online_features(features=refs, entity_rows=rows).to_dict()

    ours = stores["ours"]
    views = {fv.name: OnlineView.from_feast(fv) for fv in ours.list_feature_views()}
    reader = OnlineReader(connect(ours.config.online_store), ours.config.project, views)
    plan = reader.plan(refs)
    prefix = key_prefix(ours.config.project)

    def packed_keys(ids: np.ndarray) -> list[bytes]:
        eids = entity_ids([KEY], ["int"], [ids])
        return [k for view in VIEWS for k in view_keys(prefix, view, eids)]

    def pipelined(command: str) -> Callable[[list[tuple[Any, ...]]], Any]:
        def run(args: list[tuple[Any, ...]]) -> Any:
            pipe = raw.pipeline(transaction=False)
            for a in args:
                pipe.execute_command(command, *a)
            return pipe.execute()
        return run

    rows = lambda ids: [{KEY: int(i)} for i in ids.tolist()]
    return [
        ReadPath("a", "Feast get_online_features(...).to_dict(), Feast redis store", rows, feast_call(stores["feast"])),
        ReadPath("b", "Feast get_online_features(...).to_dict(), tidemark plugin", rows, feast_call(ours)),
        ReadPath("c", "tidemark OnlineReader.read_matrix (serving)", lambda ids: {KEY: ids},
                 lambda e: reader.read_matrix(plan, e)),
        ReadPath("c'", "tidemark OnlineReader.read_frame (notebooks)", lambda ids: {KEY: ids},
                 lambda e: reader.read_frame(plan, e)),
        ReadPath("d", "floor: redis-py pipelined GET of the packed keys", lambda ids: [(k,) for k in packed_keys(ids)],
                 pipelined("GET")),
        ReadPath("d'", "floor: redis-py pipelined HMGET of Feast's hash keys", feast_hmget_args(stores["feast"]),
                 pipelined("HMGET")),
        ReadPath("d''", "floor: one MGET of the packed keys", packed_keys, lambda keys: raw.execute_command("MGET", *keys)),
    ]


def feast_hmget_args(store: Any) -> Callable[[np.ndarray], list[tuple[Any, ...]]]:
    """Per entity and view, (hash key, *fields) as Feast's redis store builds them (its own helpers)."""
    from feast.infra.online_stores.redis import RedisOnlineStore
    from feast.protos.feast.types.EntityKey_pb2 import EntityKey
    from feast.protos.feast.types.Value_pb2 import Value

    helper = RedisOnlineStore()
    fields = {view: helper._generate_hset_keys_for_features(store.get_feature_view(view))[1] for view in VIEWS}

    def prepare(ids: np.ndarray) -> list[tuple[Any, ...]]:
        protos = [EntityKey(join_keys=[KEY], entity_values=[Value(int64_val=int(i))]) for i in ids.tolist()]
        keys = helper._generate_redis_keys_for_entities(store.config, protos)
        return [(k, *fields[view]) for view in VIEWS for k in keys]
    return prepare


def draw_ids(rng: np.random.Generator, batch: int, entities: int) -> np.ndarray:
    """``batch`` random user ids, ~3% of them unknown (never materialized)."""
    ids = rng.integers(0, entities, batch)
    unknown = rng.random(batch) < UNKNOWN_SHARE
    ids[unknown] = entities + rng.integers(0, entities, int(unknown.sum()))
    return ids.astype(np.int64)


def measure_reads(paths: list[ReadPath], args: argparse.Namespace) -> dict[int, dict[str, np.ndarray]]:
    """Per batch size, per path: call latencies in ns. Every iteration draws new ids and runs every
    path on them, rotating which path goes first; a few untimed calls warm each path up."""
    from tqdm import tqdm

    rng = np.random.default_rng(args.seed + 1)
    counts = {b: max(30, round(args.iterations.get(b, 100) * args.iterations_scale)) for b in args.batches}
    out: dict[int, dict[str, np.ndarray]] = {}
    with tqdm(total=sum(counts.values()), desc="read iterations", file=sys.stderr, disable=None) as bar:
        for batch, n in counts.items():
            for p in paths:
                for _ in range(3):
                    p.run(p.prepare(draw_ids(rng, batch, args.entities)))
            lat = {p.name: np.empty(n, dtype=np.int64) for p in paths}
            gc.collect()
            for i in range(n):
                ids = draw_ids(rng, batch, args.entities)
                for p in paths[i % len(paths):] + paths[:i % len(paths)]:
                    arg = p.prepare(ids)
                    started = time.perf_counter_ns()
                    p.run(arg)
                    lat[p.name][i] = time.perf_counter_ns() - started
                bar.update(1)
            out[batch] = lat
    return out


# --- correctness --------------------------------------------------------------------------------


def check_values(paths: list[ReadPath], names: list[str], expected: np.ndarray, args: argparse.Namespace
                 ) -> dict[str, str]:
    """Values of (a), (b), (c), (c') for a sample of users (some unknown) against the generated data."""
    ids = draw_ids(np.random.default_rng(args.seed + 2), args.check_entities, args.entities)
    want = np.full((len(ids), expected.shape[1]), np.nan)
    known = ids < args.entities
    want[known] = expected[ids[known]]
    out = {}
    for p in paths:
        if p.name in ("a", "b"):
            got = p.run(p.prepare(ids))
            matrix = np.array([[np.nan if v is None else float(v) for v in got[n]] for n in names]).T
        elif p.name == "c":
            matrix = p.run(p.prepare(ids)).values.astype(np.float64)
        elif p.name == "c'":
            matrix = p.run(p.prepare(ids))[0][names].astype("Float64").to_numpy(np.float64, na_value=np.nan)
        else:
            continue
        rtol = 1e-6 if p.name == "c" else 0.0  # read_matrix is float32 by design
        same = np.isclose(matrix, want, rtol=rtol, atol=0.0, equal_nan=True)
        filled = float(np.isfinite(matrix).mean())
        out[p.name] = (f"matches generated data ({len(ids):,} users, {filled:.0%} of values present)"
                       if same.all() else f"DIFFERENT: {int((~same).sum()):,} of {same.size:,} values")
    return out


# --- reporting ----------------------------------------------------------------------------------


def summarize(lat: dict[int, dict[str, np.ndarray]]) -> dict[int, dict[str, dict[str, float]]]:
    """p50 / p99 / mean in milliseconds per batch size and path."""
    return {b: {name: {"p50": float(np.percentile(v, 50)) / 1e6, "p99": float(np.percentile(v, 99)) / 1e6,
                       "mean": float(v.mean()) / 1e6, "n": len(v)} for name, v in per.items()}
            for b, per in lat.items()}


def table(stats: dict[int, dict[str, dict[str, float]]], paths: list[ReadPath]) -> str:
    """The read latencies as a plain-text table, with p99 ratios against the fast path (c)."""
    header = ["batch", "path", "p50 ms", "p99 ms", "p99 / (c)", "calls"]
    rows = [header]
    for batch, per in stats.items():
        for p in paths:
            s = per[p.name]
            rows.append([str(batch), f"({p.name}) {p.what}", f"{s['p50']:.3f}", f"{s['p99']:.3f}",
                         f"{s['p99'] / per['c']['p99']:.2f}x", str(s["n"])])
    widths = [max(len(r[i]) for r in rows) for i in range(len(header))]
    lines = ["  ".join(c.ljust(w) for c, w in zip(r, widths, strict=True)).rstrip() for r in rows]
    lines.insert(1, "  ".join("-" * w for w in widths))
    return "\n".join(lines)


def goals(stats: dict[int, dict[str, dict[str, float]]], mat: dict[str, float], checks: dict[str, str]
          ) -> list[dict[str, str]]:
    """The issue's goals, each PASS / FAIL / NOT RUN with the figures behind it."""
    out = []
    for batch, factor in ((1, 5.0), (1000, 10.0)):
        name = f"fast path p99 at least {factor:g}x lower than (a) at batch {batch}"
        if batch not in stats:
            out.append({"goal": name, "status": "NOT RUN", "detail": "batch size not run"})
            continue
        a, c = stats[batch]["a"]["p99"], stats[batch]["c"]["p99"]
        out.append({"goal": name, "status": "PASS" if a / c >= factor else "FAIL",
                    "detail": f"(a) {a:.3f} ms, (c) {c:.3f} ms: {a / c:.1f}x"})
    for batch, per in stats.items():
        c, d, mget = per["c"]["p99"], per["d"]["p99"], per["d''"]["p99"]
        out.append({"goal": f"fast path p99 within 2x of the floor (d) at batch {batch}",
                    "status": "PASS" if c <= 2 * d else "FAIL",
                    "detail": f"(c) {c:.3f} ms, (d) {d:.3f} ms: {c / d:.2f}x; one MGET (d'') {mget:.3f} ms"})
    speedup = mat["feast"] / mat["ours"]
    out.append({"goal": "materialization at least 5x faster than Feast's redis store",
                "status": "PASS" if speedup >= 5 else "FAIL",
                "detail": f"Feast {mat['feast']:.1f} s, ours {mat['ours']:.1f} s: {speedup:.1f}x"})
    for name, verdict in checks.items():
        out.append({"goal": f"({name}) returns the generated values", "detail": verdict,
                    "status": "PASS" if verdict.startswith("matches") else "FAIL"})
    return out


def environment(args: argparse.Namespace, raw: Any, source_rows: int, online_rows: int) -> dict[str, str]:
    """Machine, versions, sizes and command line, printed above the tables."""
    import feast
    import redis

    cpu = next((line.split(":", 1)[1].strip() for line in Path("/proc/cpuinfo").read_text().splitlines()
                if line.startswith("model name")), platform.processor()) if Path("/proc/cpuinfo").exists() else ""
    return {
        "machine": f"{len(os.sched_getaffinity(0))} cores (nproc), {cpu}; load average "
                   + ", ".join(f"{x:.2f}" for x in os.getloadavg()),
        "versions": f"Redis {raw.info('server')['redis_version']} (local, loopback), redis-py {redis.__version__}, "
                    f"Feast {feast.__version__}, numpy {np.__version__}, Python {platform.python_version()}",
        "sizes": f"{args.entities:,} users, {len(VIEWS)} views x {args.features_per_view} features (70% float64, "
                 f"30% int64, {NULL_SHARE:.0%} nulls), {source_rows:,} offline rows, {online_rows:,} online values",
        "command": shlex.join([os.path.relpath(sys.executable), *sys.argv]),
    }


def print_report(env: dict[str, str], mat: dict[str, float], rows: tuple[int, int], paths: list[ReadPath],
                 stats: dict[int, dict[str, dict[str, float]]], verdicts: list[dict[str, str]]) -> None:
    for key, value in env.items():
        print(f"{key}: {value}")
    print("\nmaterialization (same Spark offline store, warm Spark, one run each; rows/s = offline rows in)")
    labels = {"feast": "Feast materialize -> Feast redis store", "ours": "tidemark materialize_views -> plugin",
              "plugin": "Feast materialize -> tidemark plugin"}
    for name, seconds in mat.items():
        print(f"  {labels[name]:<40} {seconds:7.1f} s  {rows[0] / seconds:>10,.0f} rows/s  "
              f"({rows[1] / seconds:,.0f} online values/s)  {mat['feast'] / seconds:.1f}x Feast")
    print("\nreads (one call each, latency per call; Feast paths end in .to_dict(); ids prepared outside the timer)")
    print(table(stats, paths))
    print()
    for g in verdicts:
        print(f"{g['status']:<7} {g['goal']}: {g['detail']}")


# --- command line -------------------------------------------------------------------------------


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0],
                                formatter_class=argparse.ArgumentDefaultsHelpFormatter)
    p.add_argument("--entities", type=int, default=100_000, help="users (the entity)")
    p.add_argument("--features-per-view", type=int, default=10)
    p.add_argument("--rows-per-entity", type=int, default=2, help="offline rows per user and view (newest wins)")
    p.add_argument("--batches", default="1,100,1000", help="entities per read call, comma separated")
    p.add_argument("--iterations", default="1:2000,100:300,1000:100", help="BATCH:CALLS per batch size")
    p.add_argument("--iterations-scale", type=float, default=1.0, help="multiplies --iterations (at least 30)")
    p.add_argument("--check-entities", type=int, default=1000, help="users in the correctness check")
    p.add_argument("--partitions", type=int, default=None,
                   help="Spark partitions per view for tidemark's materialization (default: 2 per core)")
    p.add_argument("--driver-memory", default="4g", help="Spark driver memory")
    p.add_argument("--workdir", type=Path, default=None,
                   help="data and registries, kept afterwards (default: a temp dir, removed at the end)")
    p.add_argument("--seed", type=int, default=7)
    p.add_argument("--json", type=Path, default=None, metavar="PATH", help="also write the raw figures here")
    args = p.parse_args(argv)
    args.batches = [int(b) for b in args.batches.split(",") if b.strip()]
    args.iterations = {int(b): int(n) for b, _, n in (x.partition(":") for x in args.iterations.split(","))}
    return args


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(name)s %(message)s", stream=sys.stderr)
    logging.getLogger("feast").setLevel(logging.WARNING)
    import redis

    from features.spark import spark_session
    from tidemark.settings import SparkSettings
    sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
    from tests.integration.redis_servers import start_redis

    began = time.perf_counter()
    root = Path(args.workdir or tempfile.mkdtemp(prefix="tidemark-bench-online-")).resolve()
    server = start_redis(root / "redis")
    spark = None
    try:
        raw = redis.Redis(host="127.0.0.1", port=server.port)
        now = datetime.now(UTC).replace(microsecond=0)
        expected, *rows = write_data(root / "data", args, int(now.timestamp()) * US)
        defs = definitions(root / "data", args.features_per_view)
        plugin = {"type": "features.online_store.PackedRedisOnlineStore", "url": server.url, "timeout_ms": 1000}
        stores = {"feast": open_store(root, "bench_feast", {"type": "redis", "connection_string":
                                                             f"127.0.0.1:{server.port}"}, defs),
                  "ours": open_store(root, "bench_ours", plugin, defs),
                  "plugin": open_store(root, "bench_plugin", plugin, defs)}
        spark = spark_session(SparkSettings(master="local[*]", driver_memory=args.driver_memory, shuffle_partitions=8))
        spark.range(1000).selectExpr("sum(id)").collect()
        mat = materialize_all(stores, spark, now - timedelta(days=2), now, args.partitions)
        spark.stop()  # reads need no Spark; its JVM would only compete for the two cores
        spark = None
        names = [n for view in VIEWS for n, _ in feature_specs(view, args.features_per_view)]
        refs = [f"{view}:{n}" for view in VIEWS for n, _ in feature_specs(view, args.features_per_view)]
        paths = read_paths(stores, refs, raw)
        checks = check_values(paths, names, expected, args)
        gc.collect()
        gc.freeze()  # setup objects (Spark, Feast registries) out of the collector's way, for every path alike
        stats = summarize(lat := measure_reads(paths, args))
        env = environment(args, raw, *rows)
        verdicts = goals(stats, mat, checks)
        print_report(env, mat, (rows[0], rows[1]), paths, stats, verdicts)
        print(f"\ntotal wall time {time.perf_counter() - began:.0f} s")
        if args.json:
            args.json.write_text(json.dumps({**env, "materialize_s": mat, "source_rows": rows[0], "online_values": rows[1],
                                             "reads_ms": stats, "checks": checks, "goals": verdicts,
                                             "latencies_us": {b: {k: (v // 1000).tolist() for k, v in per.items()}
                                                              for b, per in lat.items()}}, indent=1) + "\n")
    finally:
        if spark is not None:
            spark.stop()
        server.stop()
        if args.workdir is None:
            shutil.rmtree(root, ignore_errors=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
