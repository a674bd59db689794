"""Point-in-time join: tidemark's Spark as-of offline store against Feast's own Spark store.

Builds the same Feast repo twice on generated data, once with Feast's built-in ``spark`` offline
store and once with ``features.offline_store.SparkAsofOfflineStore`` (created-timestamp filter
off, so both have Feast's semantics), and times ``get_historical_features(...).to_df()`` end to
end (pandas in, pandas out) on one shared, warm Spark session. ``pandas.merge_asof`` on the same
data, already in memory, is the single-machine floor. Prints a table and a PASS/FAIL line per goal.

    .venv/bin/python benchmarks/pit_join.py                       # 100k x 1M and 1M x 10M
    .venv/bin/python benchmarks/pit_join.py --sizes 100k:1m --repeats 3 --json /tmp/pit.json

Generated data is cached under ``--workdir`` (default: a folder under the system temp dir).
"""

from __future__ import annotations

import argparse
import contextlib
import gc
import io
import json
import logging
import os
import platform
import shlex
import shutil
import statistics
import sys
import tempfile
import time
import warnings
from collections.abc import Callable, Iterator
from dataclasses import asdict, dataclass, field
from datetime import timedelta
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.parquet as pq

if TYPE_CHECKING:
    from feast import FeatureStore

log = logging.getLogger("pit_join")

KEY = "customer_id"
TS = "event_timestamp"
CREATED = "created"
FEATURES = [f"feature_{i}" for i in range(5)]
VIEW = "customer_stats"
REFS = [f"{VIEW}:{f}" for f in FEATURES]
COMPARE = [KEY, TS, *FEATURES]
STORES = ("ours", "feast", "pandas")
FILES = 8
ROWS_PER_KEY = 100
BASE_US = int(pd.Timestamp("2026-01-01", tz="UTC").value // 1_000)
SPAN_US = 90 * 86_400 * 1_000_000
DATA_VERSION = "v1"
ISSUE_SIZES = {"100k x 1M": (100_000, 1_000_000), "1M x 10M": (1_000_000, 10_000_000)}


@dataclass(frozen=True)
class Size:
    """One benchmark size: entity rows (predictions) against feature rows (history)."""

    entity_rows: int
    feature_rows: int

    @property
    def label(self) -> str:
        return f"{_short(self.entity_rows)} x {_short(self.feature_rows)}"


@dataclass
class Measurement:
    """Wall times (seconds) of one store at one size, and what its last run returned."""

    store: str
    seconds: list[float] = field(default_factory=list)
    rows: int | None = None
    filled: float | None = None  # share of output rows with a value (the rest had no history)
    output: pd.DataFrame | None = None
    note: str | None = None  # "skipped …" or "failed: …"

    @property
    def median(self) -> float | None:
        return statistics.median(self.seconds) if self.seconds else None


@dataclass
class Case:
    """One table section: a size, with or without timestamp ties, and its measurements."""

    size: Size
    ties: bool
    entity_rows: int
    results: dict[str, Measurement]
    identical: dict[str, str] = field(default_factory=dict)

    @property
    def label(self) -> str:
        return self.size.label + (" ties" if self.ties else "")


# --- data -------------------------------------------------------------------------------------


def distinct_offsets(rng: np.random.Generator, n: int, span: int) -> np.ndarray:
    """``n`` distinct integer offsets in ``[0, span)``, ascending (microseconds)."""
    return np.sort(rng.integers(0, span - n + 1, n)) + np.arange(n)


def feature_table(size: Size, seed: int, ties: bool) -> pa.Table:
    """The feature history: ~``ROWS_PER_KEY`` rows per key, event times unique, time-ordered.

    With ``ties``, 1% of the rows are repeated with the same event and created time but new
    feature values (a full tie, which Feast's store answers with one row per tied candidate).
    """
    rng = np.random.default_rng(seed)
    n = size.feature_rows
    keys = rng.integers(0, max(1, n // ROWS_PER_KEY), n)
    event = BASE_US + distinct_offsets(rng, n, SPAN_US)
    late = rng.random(n) < 0.05  # a few rows arrive hours late, the rest within minutes
    created = event + np.where(late, rng.integers(3_600, 172_800, n), rng.integers(1, 600, n)) * 1_000_000
    values = rng.standard_normal((n, len(FEATURES)))
    if ties:
        dup = np.sort(rng.choice(n, n // 100, replace=False))
        keys, event, created = (np.concatenate([a, a[dup]]) for a in (keys, event, created))
        values = np.concatenate([values, rng.standard_normal((len(dup), len(FEATURES)))])
        order = np.argsort(event, kind="stable")
        keys, event, created, values = keys[order], event[order], created[order], values[order]
    columns = {KEY: pa.array(keys, pa.int64()), TS: _us(event), CREATED: _us(created)}
    columns.update({f: pa.array(values[:, i]) for i, f in enumerate(FEATURES)})
    return pa.table(columns)


def entity_table(size: Size, seed: int) -> pa.Table:
    """Prediction rows over the same time span, unordered; ~5% of keys have no history."""
    rng = np.random.default_rng(seed + 1)
    n_keys = max(1, size.feature_rows // ROWS_PER_KEY)
    n = size.entity_rows
    keys = rng.integers(0, n_keys + max(1, n_keys // 20), n)
    stamps = BASE_US + rng.permutation(distinct_offsets(rng, n, SPAN_US))
    return pa.table({KEY: pa.array(keys, pa.int64()), TS: _us(stamps)})


def _us(micros: np.ndarray) -> pa.Array:
    return pa.array(micros.astype("datetime64[us]"), pa.timestamp("us", tz="UTC"))


def dataset_dir(workdir: Path, size: Size, seed: int, ties: bool) -> Path:
    """Generate (once) and return the folder holding ``features/`` and ``entities.parquet``."""
    name = f"{DATA_VERSION}-e{size.entity_rows}-f{size.feature_rows}-s{seed}{'-ties' if ties else ''}"
    folder = workdir / "data" / name
    if (folder / "_COMPLETE").exists():
        log.info("data %s: cached", name)
        return folder
    shutil.rmtree(folder, ignore_errors=True)
    started = time.perf_counter()
    table = feature_table(size, seed, ties)
    (folder / "features").mkdir(parents=True)
    chunk = -(-table.num_rows // FILES)
    for i in range(FILES):
        pq.write_table(table.slice(i * chunk, chunk), folder / "features" / f"part-{i:02d}.parquet",
                       coerce_timestamps="us")
    pq.write_table(entity_table(size, seed), folder / "entities.parquet", coerce_timestamps="us")
    (folder / "_COMPLETE").write_text(json.dumps({"rows": table.num_rows}))
    log.info("data %s: generated in %.1f s", name, time.perf_counter() - started)
    return folder


def load_frames(folder: Path) -> tuple[pd.DataFrame, pd.DataFrame]:
    """The entity frame (ns, UTC, as a user holds it) and the feature frame for merge_asof."""
    entities = pq.read_table(folder / "entities.parquet").to_pandas()
    entities[TS] = entities[TS].astype("datetime64[ns, UTC]")
    feats = pq.read_table(folder / "features", columns=[KEY, TS, *FEATURES]).to_pandas()
    feats[TS] = feats[TS].astype("datetime64[ns, UTC]")
    return entities, feats


# --- stores -----------------------------------------------------------------------------------


def feature_store(kind: str, data: Path, repo: Path) -> FeatureStore:
    """A fresh Feast repo at ``repo`` with one feature view over ``data``, on store ``kind``."""
    import yaml
    from feast import Entity, FeatureStore, FeatureView, Field, ValueType
    from feast.infra.offline_stores.contrib.spark_offline_store.spark_source import SparkSource
    from feast.types import Float64

    offline = {"type": "spark"} if kind == "feast" else {
        "type": "features.offline_store.SparkAsofOfflineStore", "filter_by_created_timestamp": False}
    shutil.rmtree(repo, ignore_errors=True)
    repo.mkdir(parents=True)
    (repo / "feature_store.yaml").write_text(yaml.safe_dump({
        "project": "pit_bench", "provider": "local", "registry": str(repo / "registry.db"),
        "offline_store": offline, "online_store": {"type": "sqlite", "path": str(repo / "online.db")},
        "entity_key_serialization_version": 3,
    }))
    with quiet():
        customer = Entity(name="customer", join_keys=[KEY], value_type=ValueType.INT64)
        view = FeatureView(
            name=VIEW, entities=[customer], ttl=timedelta(0),
            schema=[Field(name=f, dtype=Float64) for f in FEATURES],
            source=SparkSource(name="customer_src", path=str(data), file_format="parquet",
                               timestamp_field=TS, created_timestamp_column=CREATED),
        )
        store = FeatureStore(repo_path=str(repo))
        store.apply([customer, view])
    return store


@contextlib.contextmanager
def quiet() -> Iterator[None]:
    """Swallow Feast's stdout prints ("Pulling …") and its RuntimeWarnings (alpha notices)."""
    with warnings.catch_warnings(), contextlib.redirect_stdout(io.StringIO()):
        warnings.simplefilter("ignore", RuntimeWarning)
        warnings.simplefilter("ignore", DeprecationWarning)
        warnings.simplefilter("ignore", FutureWarning)
        yield


def store_runner(store: FeatureStore) -> Callable[[pd.DataFrame], pd.DataFrame]:
    """``get_historical_features(...).to_df()`` on ``store``: what a user times."""
    def run(entities: pd.DataFrame) -> pd.DataFrame:
        with quiet():
            return store.get_historical_features(entity_df=entities, features=REFS).to_df()
    return run


def pandas_runner(feats: pd.DataFrame) -> Callable[[pd.DataFrame], pd.DataFrame]:
    """``merge_asof`` backward, exact matches allowed, both frames sorted first (sort timed)."""
    def run(entities: pd.DataFrame) -> pd.DataFrame:
        left = entities.sort_values(TS, kind="stable")
        right = feats.sort_values(TS, kind="stable")
        return pd.merge_asof(left, right, on=TS, by=KEY, direction="backward", allow_exact_matches=True)
    return run


# --- measuring --------------------------------------------------------------------------------


def measure(runners: dict[str, Callable[[pd.DataFrame], pd.DataFrame]], entities: pd.DataFrame,
            repeats: int, progress: Any) -> dict[str, Measurement]:
    """One untimed warm-up per store, then ``repeats`` timed rounds, stores interleaved.

    Interleaving spreads any load from other processes over all stores alike. Each call gets
    its own copy of the entity frame (Feast's store rewrites the timestamp column in place).
    """
    results = {name: Measurement(name) for name in runners}
    for round_ in range(repeats + 1):
        for name, run in runners.items():
            m = results[name]
            if m.note is None:
                _one_run(m, run, entities, timed=round_ > 0)
            progress.update(1)
    return results


def _one_run(m: Measurement, run: Callable[[pd.DataFrame], pd.DataFrame], entities: pd.DataFrame,
             *, timed: bool) -> None:
    frame = entities.copy()
    gc.collect()
    started = time.perf_counter()
    try:
        out = run(frame)
    except Exception as exc:  # a failing peer is a result to report, not a crash
        m.note = f"failed: {type(exc).__name__}: {str(exc).splitlines()[0][:80] if str(exc) else ''}"
        log.exception("%s failed", m.store)
        return
    elapsed = time.perf_counter() - started
    if timed:
        m.seconds.append(elapsed)
    m.rows, m.output = len(out), out
    m.filled = float(out[FEATURES[0]].notna().mean()) if len(out) else None
    log.info("%-6s %s run: %.2f s, %d rows", m.store, "timed" if timed else "warm-up", elapsed, len(out))


# --- comparing --------------------------------------------------------------------------------


def normalised(frame: pd.DataFrame) -> pd.DataFrame:
    """The compared columns, timestamps as UTC microseconds (naive Spark output read as UTC)."""
    out = frame[COMPARE].copy()
    stamps = pd.to_datetime(out[TS])
    stamps = stamps.dt.tz_localize("UTC") if stamps.dt.tz is None else stamps.dt.tz_convert("UTC")
    out[TS] = stamps.astype("datetime64[us, UTC]")
    out[KEY] = out[KEY].astype("int64")
    out[FEATURES] = out[FEATURES].astype("float64")
    return out.sort_values(COMPARE, na_position="last", kind="stable").reset_index(drop=True)


def differing_rows(a: pd.DataFrame, b: pd.DataFrame) -> int:
    """Rows in one output and not the other (multiset difference, NaN equals NaN)."""
    a, b = normalised(a), normalised(b)
    if len(a) == len(b):
        same = (a == b) | (a.isna() & b.isna())
        if bool(same.all(axis=None)):
            return 0
    a["_n"] = a.groupby(COMPARE, dropna=False, sort=False).cumcount()
    b["_n"] = b.groupby(COMPARE, dropna=False, sort=False).cumcount()
    merged = a.merge(b, on=[*COMPARE, "_n"], how="outer", indicator=True)
    return int((merged["_merge"] != "both").sum())


def identity(ours: Measurement, other: Measurement) -> str:
    """``identical`` / ``DIFFERENT (n rows)`` of ``other``'s output against ours."""
    if ours.output is None or other.output is None:
        return "-"
    n = differing_rows(ours.output, other.output)
    return "identical" if n == 0 else f"DIFFERENT ({n:,} rows)"


# --- one size ---------------------------------------------------------------------------------


def run_case(size: Size, ties: bool, args: argparse.Namespace, workdir: Path, progress: Any) -> Case:
    """Generate or load the data, build both repos, measure the selected stores, compare."""
    folder = dataset_dir(workdir, size, args.seed, ties)
    entities, feats = load_frames(folder)
    runners: dict[str, Callable[[pd.DataFrame], pd.DataFrame]] = {}
    skipped: dict[str, str] = {}
    for name in args.stores:
        if name == "pandas":
            runners[name] = pandas_runner(feats)
        elif name == "feast" and args.skip_feast_above is not None and size.feature_rows > args.skip_feast_above:
            skipped[name] = f"skipped (> {_short(args.skip_feast_above)} feature rows)"
        else:
            repo = workdir / "repos" / folder.name / name
            runners[name] = store_runner(feature_store(name, folder / "features", repo))
    log.info("case %s%s: %d entity rows, %s", size.label, " ties" if ties else "", len(entities),
             ", ".join(runners))
    results = measure(runners, entities, args.repeats, progress)
    results.update({name: Measurement(name, note=note) for name, note in skipped.items()})
    case = Case(size, ties, len(entities), {s: results[s] for s in args.stores})
    if not ties and "ours" in case.results:
        for name in ("feast", "pandas"):
            if name in case.results:
                case.identical[name] = identity(case.results["ours"], case.results[name])
    for m in case.results.values():
        m.output = None  # free memory before the next size
    return case


# --- reporting --------------------------------------------------------------------------------


def table(cases: list[Case]) -> str:
    """The results as a plain-text table."""
    header = ["size", "store", "median s", "(min–max)", "rows out", "filled", "time / ours", "identical to ours?"]
    rows = [header] + [_table_row(case, name) for case in cases for name in case.results]
    widths = [max(len(r[i]) for r in rows) for i in range(len(header))]
    lines = ["  ".join(c.ljust(w) for c, w in zip(r, widths, strict=True)).rstrip() for r in rows]
    lines.insert(1, "  ".join("-" * w for w in widths))
    return "\n".join(lines)


def _table_row(case: Case, name: str) -> list[str]:
    m, ours = case.results[name], case.results.get("ours")
    rows = "-" if m.rows is None else f"{m.rows:,}" + (f" / {case.entity_rows:,} in" if name == "ours" else "")
    ratio = "-"
    if name != "ours" and ours is not None and ours.median and m.median is not None:
        ratio = f"{m.median / ours.median:.2f}x"
    return [
        case.label, name,
        f"{m.median:.2f}" if m.median is not None else (m.note or "-").split(" ")[0].rstrip(":"),
        f"({min(m.seconds):.2f}–{max(m.seconds):.2f})" if m.seconds else "",
        rows,
        f"{m.filled:.1%}" if m.filled is not None else "-",
        ratio,
        m.note or case.identical.get(name, "n/a (ties)" if case.ties and name != "ours" else "-"),
    ]


def goals(cases: list[Case]) -> list[dict[str, Any]]:
    """The issue's goals, each PASS / FAIL / NOT RUN with the figures behind it."""
    plain = {(c.size.entity_rows, c.size.feature_rows): c for c in cases if not c.ties}
    out: list[dict[str, Any]] = []
    small, large = plain.get(ISSUE_SIZES["100k x 1M"]), plain.get(ISSUE_SIZES["1M x 10M"])
    out.append(_speed_goal("at least 5x faster than Feast's store at 100k x 1M", small, "feast", 5.0))
    out.append(_identity_goal("output identical to Feast's at 100k x 1M (no ties)", small, "feast"))
    out.extend(_tie_goal(c) for c in cases if c.ties)
    out.append(_speed_goal("at least 5x faster than Feast's store at 1M x 10M", large, "feast", 5.0))
    out.append(_speed_goal("within 2x of pandas merge_asof at 1M x 10M", large, "pandas", 0.5))
    for case in plain.values():
        out.append(_identity_goal(f"output identical to pandas merge_asof at {case.label}", case, "pandas"))
    return out


def _speed_goal(name: str, case: Case | None, peer: str, factor: float) -> dict[str, Any]:
    ours = case.results.get("ours") if case else None
    other = case.results.get(peer) if case else None
    if not ours or not other or ours.median is None or other.median is None:
        why = (other.note if other and other.note else "size or store not run") if case else "size not run"
        return {"goal": name, "status": "NOT RUN", "detail": why}
    speedup = other.median / ours.median
    detail = f"ours {ours.median:.2f} s, {peer} {other.median:.2f} s: ours is {speedup:.2f}x faster"
    if factor < 1:
        detail = f"ours {ours.median:.2f} s, {peer} {other.median:.2f} s: ours takes {1 / speedup:.2f}x {peer}'s time"
    return {"goal": name, "status": "PASS" if speedup >= factor else "FAIL", "detail": detail}


def _identity_goal(name: str, case: Case | None, peer: str) -> dict[str, Any]:
    verdict = case.identical.get(peer) if case else None
    if verdict in (None, "-"):
        return {"goal": name, "status": "NOT RUN", "detail": "size or store not run"}
    return {"goal": name, "status": "PASS" if verdict == "identical" else "FAIL", "detail": verdict}


def _tie_goal(case: Case) -> dict[str, Any]:
    name = f"one row per entity row on tied data at {case.size.label}"
    ours, feast = case.results.get("ours"), case.results.get("feast")
    if not ours or ours.rows is None:
        return {"goal": name, "status": "NOT RUN", "detail": "ours not run"}
    detail = f"{case.entity_rows:,} entity rows in; ours returned {ours.rows:,}"
    if feast and feast.rows is not None:
        detail += f", Feast's store {feast.rows:,} ({feast.rows - case.entity_rows:+,} duplicated by ties)"
    return {"goal": name, "status": "PASS" if ours.rows == case.entity_rows else "FAIL", "detail": detail}


def environment(spark: Any, args: argparse.Namespace) -> dict[str, str]:
    """Machine, versions and command line, printed above the table."""
    import feast
    import pyspark

    mem = next((int(line.split()[1]) / 2**20 for line in Path("/proc/meminfo").read_text().splitlines()
                if line.startswith("MemTotal:")), float("nan")) if Path("/proc/meminfo").exists() else float("nan")
    cpu = next((line.split(":", 1)[1].strip() for line in Path("/proc/cpuinfo").read_text().splitlines()
                if line.startswith("model name")), platform.processor()) if Path("/proc/cpuinfo").exists() else ""
    load = ", ".join(f"{x:.2f}" for x in os.getloadavg())
    return {
        "machine": f"{len(os.sched_getaffinity(0))} cores (nproc), {mem:.1f} GiB memory, {cpu}; load average {load}",
        "versions": (f"Spark {spark.version} (pyspark {pyspark.__version__}), Feast {feast.__version__}, "
                     f"pandas {pd.__version__}, pyarrow {pa.__version__}, numpy {np.__version__}, "
                     f"Python {platform.python_version()}"),
        "spark": (f"local[*], driver memory {args.driver_memory}, {args.shuffle_partitions} shuffle partitions, "
                  "one session shared by both stores, warm"),
        "command": shlex.join([_rel(sys.executable), *sys.argv]),
    }


def _rel(path: str) -> str:
    rel = os.path.relpath(path)
    return path if rel.startswith("..") else rel


# --- command line -----------------------------------------------------------------------------


def parse_count(text: str) -> int:
    """``100k`` -> 100000, ``10m`` -> 10000000, ``2500`` -> 2500."""
    text = text.strip().lower().replace("_", "")
    scale = {"k": 1_000, "m": 1_000_000}.get(text[-1:], 1)
    try:
        return int(float(text[:-1] if scale > 1 else text) * scale)
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r} is not a row count; write e.g. 100k or 1m") from None


def parse_sizes(text: str) -> list[Size]:
    """``100k:1m,1m:10m`` -> sizes as (entity rows, feature rows)."""
    sizes = []
    for part in filter(None, (p.strip() for p in text.split(","))):
        ent, sep, feat = part.partition(":")
        if not sep:
            raise argparse.ArgumentTypeError(f"size {part!r} needs ENTITY_ROWS:FEATURE_ROWS, e.g. 100k:1m")
        sizes.append(Size(parse_count(ent), parse_count(feat)))
    return sizes


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0],
                                formatter_class=argparse.ArgumentDefaultsHelpFormatter)
    p.add_argument("--sizes", type=parse_sizes, default="100k:1m,1m:10m",
                   help="ENTITY_ROWS:FEATURE_ROWS, comma separated")
    p.add_argument("--repeats", type=int, default=3, help="timed runs per store per size (median reported)")
    p.add_argument("--driver-memory", default="12g", help="Spark driver memory (both stores share the session)")
    p.add_argument("--shuffle-partitions", type=int, default=8, help="spark.sql.shuffle.partitions")
    p.add_argument("--skip-feast-above", type=parse_count, default=None, metavar="ROWS",
                   help="skip Feast's store for sizes with more feature rows than this")
    p.add_argument("--ties", default="auto", metavar="SIZE",
                   help="size of the timestamp-ties section: ENTITY:FEATURE, 'auto' (100k:1m if among "
                        "--sizes, else the smallest size), or 'none'")
    p.add_argument("--stores", default="ours,feast,pandas", help="which of ours,feast,pandas to run")
    p.add_argument("--workdir", type=Path, default=Path(tempfile.gettempdir()) / "tidemark-bench-pit-join",
                   help="generated data (cached by size and seed) and Feast repos")
    p.add_argument("--seed", type=int, default=7)
    p.add_argument("--json", type=Path, default=None, metavar="PATH", help="also write the results here")
    args = p.parse_args(argv)
    args.stores = [s.strip() for s in args.stores.split(",") if s.strip()]
    unknown = sorted(set(args.stores) - set(STORES))
    if unknown or not args.stores:
        p.error(f"unknown store(s) {unknown}; choose from {','.join(STORES)}")
    if args.repeats < 1:
        p.error("--repeats must be at least 1")
    args.tie_size = _tie_size(args.ties, args.sizes, p)
    return args


def _tie_size(text: str, sizes: list[Size], p: argparse.ArgumentParser) -> Size | None:
    if text == "none":
        return None
    if text == "auto":
        wanted = Size(*ISSUE_SIZES["100k x 1M"])
        return wanted if wanted in sizes else min(sizes, key=lambda s: s.feature_rows, default=None)
    try:
        return parse_sizes(text)[0]
    except (argparse.ArgumentTypeError, IndexError):
        p.error(f"--ties {text!r}: give ENTITY:FEATURE, auto or none")
    return None


def start_spark(args: argparse.Namespace, workdir: Path) -> Any:
    """The one Spark session both stores use, started before any Feast call."""
    from features.settings import SparkSettings
    from features.spark import spark_session

    settings = SparkSettings(master="local[*]", driver_memory=args.driver_memory,
                             shuffle_partitions=args.shuffle_partitions,
                             extra_conf={"spark.sql.warehouse.dir": str(workdir / "spark-warehouse")})
    return spark_session(settings)


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(name)s %(message)s", stream=sys.stderr)
    logging.getLogger("feast").setLevel(logging.WARNING)
    from tqdm import tqdm
    from tqdm.contrib.logging import logging_redirect_tqdm

    workdir = args.workdir.resolve()
    workdir.mkdir(parents=True, exist_ok=True)
    spark = start_spark(args, workdir)
    env = environment(spark, args)
    plan = [(s, False) for s in args.sizes] + ([(args.tie_size, True)] if args.tie_size else [])
    cases = []
    with logging_redirect_tqdm(), tqdm(total=len(plan) * len(args.stores) * (args.repeats + 1),
                                       desc="runs", unit="run", file=sys.stderr, disable=None) as progress:
        for size, ties in plan:
            cases.append(run_case(size, ties, args, workdir, progress))
    report = {**env, "load average at end": ", ".join(f"{x:.2f}" for x in os.getloadavg())}
    verdicts = goals(cases)
    print_report(report, cases, verdicts)
    if args.json:
        args.json.write_text(json.dumps(_json(report, cases, verdicts), indent=2) + "\n")
    return 0


def print_report(env: dict[str, str], cases: list[Case], results: list[dict[str, Any]]) -> None:
    for key, value in env.items():
        print(f"{key}: {value}")
    print("timed: get_historical_features(entity_df=pandas, features=[5 features]).to_df(), end to end;"
          " pandas: merge_asof on frames already in memory, sort included")
    print()
    print(table(cases))
    print()
    for g in results:
        print(f"{g['status']:<7} {g['goal']}: {g['detail']}")


def _json(env: dict[str, str], cases: list[Case], results: list[dict[str, Any]]) -> dict[str, Any]:
    out = []
    for case in cases:
        for name, m in case.results.items():
            row = asdict(m)
            row.pop("output")
            row.update(size=case.size.label, ties=case.ties, entity_rows=case.entity_rows,
                       feature_rows=case.size.feature_rows, median=m.median,
                       identical_to_ours=case.identical.get(name))
            out.append(row)
    return {**env, "results": out, "goals": results}


def _short(n: int) -> str:
    for unit, scale in (("M", 1_000_000), ("k", 1_000)):
        if n >= scale and n % (scale // 10) == 0:
            return f"{n / scale:g}{unit}"
    return str(n)


if __name__ == "__main__":
    sys.exit(main())
