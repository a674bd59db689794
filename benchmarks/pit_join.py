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
import gc
import json
import logging
import os
import platform
import shlex
import statistics
import sys
import tempfile
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np
import pandas as pd
import pyarrow as pa

if TYPE_CHECKING:
    from feast import FeatureStore

from pit_data import (  # the benchmark runs as a script: its folder is on sys.path
    COMPARE,
    FEATURES,
    KEY,
    REFS,
    STORES,
    TS,
    Size,
    dataset_dir,
    feature_store,
    load_frames,
    parse_count,
    quiet,
    short,
)

log = logging.getLogger("pit_join")

ISSUE_SIZES = {"100k x 1M": (100_000, 1_000_000), "1M x 10M": (1_000_000, 10_000_000)}


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


# --- stores -----------------------------------------------------------------------------------


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
            skipped[name] = f"skipped (> {short(args.skip_feast_above)} feature rows)"
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
    from features.spark import spark_session
    from tidemark.settings import SparkSettings

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


if __name__ == "__main__":
    sys.exit(main())
