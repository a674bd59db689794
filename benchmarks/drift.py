"""Drift detection: tidemark's reference profile and ``compare`` against Evidently 0.7's DataDriftPreset.

Generates reference and current data (seeded numpy; numeric columns from six distributions,
categorical columns with 5 to 50 categories, drift in some columns of the current data) and
times, on the same data in the same run:

* Evidently: ``Report([DataDriftPreset(method="psi")]).run(reference_data=ref, current_data=cur)``
  and the same with KS for numeric and chi² for categorical columns (pandas frames in);
* ours: ``ReferenceProfile.fit(ref)`` once, timed on its own, then ``compare(profile, cur)``.

Every measurement runs in a fresh (spawned) process, so that its peak RSS is its own; Python
allocations are measured with ``tracemalloc`` in one extra, untimed run. Prints a table, the
per-column agreement of the two PSI values (informational: the binnings differ) and a PASS/FAIL
line per goal.

    .venv/bin/python benchmarks/drift.py                      # 200k x 20, 1M x 60 (both); 10M x 100 (ours)
    .venv/bin/python benchmarks/drift.py --sizes 20k:20 --ours-only-sizes none   # smoke test, ~1 minute
"""

from __future__ import annotations

import argparse
import gc
import json
import logging
import multiprocessing
import os
import platform
import shlex
import statistics
import sys
import tempfile
import time
import tracemalloc
import warnings
from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

REPO = Path(__file__).resolve().parent.parent
if str(REPO) not in sys.path:  # the benchmark runs as a script; spawned workers inherit sys.path
    sys.path.insert(0, str(REPO))

from drift_data import Size, generate, write_parquet  # the script's folder is on sys.path
from pit_data import parse_count

log = logging.getLogger("drift_bench")

EVIDENTLY_METHODS = {
    "evidently psi": {"method": "psi"},
    "evidently ks/chi2": {"num_method": "ks", "cat_method": "chisquare"},
}
GOAL_SPEEDUP = ("1M x 60", 100.0)
GOAL_LARGE = ("10M x 100", 60.0)


# --- one measurement, in its own process ----------------------------------------------------------


def _status_kib(key: str) -> int:
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith(key + ":"):
            return int(line.split()[1])
    return 0


def _reset_peak_rss() -> bool:
    """Reset the kernel's peak-RSS mark (Linux), so that ru_maxrss covers what follows only."""
    try:
        Path("/proc/self/clear_refs").write_text("5")
        return True
    except OSError:
        return False


def measured(run: Callable[[], Any], repeats: int, trace: bool) -> dict[str, Any]:
    """Time ``run`` ``repeats`` times; peak RSS over those runs; tracemalloc peak in one more.

    Peak RSS is the kernel's high-water mark (VmHWM), reset just before the runs. (``ru_maxrss``
    would not do: in a spawned child it starts at the parent's RSS, inherited through fork+exec.)
    """
    gc.collect()
    reset = _reset_peak_rss()
    before_kib = _status_kib("VmRSS")
    seconds, result = [], None
    for _ in range(repeats):
        gc.collect()
        started = time.perf_counter()
        result = run()
        seconds.append(time.perf_counter() - started)
        log.info("  timed run: %.2f s", seconds[-1])
    peak_kib = _status_kib("VmHWM")
    traced = None
    if trace:
        result = None
        gc.collect()
        tracemalloc.start()
        result = run()
        traced = tracemalloc.get_traced_memory()[1]
        tracemalloc.stop()
    return {"seconds": seconds, "rss_before_mib": before_kib / 1024, "peak_rss_mib": peak_kib / 1024,
            "extra_rss_mib": (peak_kib - before_kib) / 1024 if reset else None,
            "tracemalloc_peak_mib": traced / 2**20 if traced is not None else None, "result": result}


def worker(task: dict[str, Any]) -> dict[str, Any]:
    """Entry point of a spawned process: make the data, measure one tool, return the figures."""
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(name)s %(message)s", stream=sys.stderr)
    warnings.simplefilter("ignore")
    size, seed, tool = Size(*task["size"]), task["seed"], task["tool"]
    started = time.perf_counter()
    if tool == "ours fit":
        return _fit_task(size, seed, task, started)
    if tool == "ours compare":
        return _compare_task(size, seed, task, started)
    return _evidently_task(size, seed, task, started)


def _fit_task(size: Size, seed: int, task: dict[str, Any], started: float) -> dict[str, Any]:
    from monitoring.drift import ReferenceProfile

    ref = generate(size, seed, current=False)
    generated = time.perf_counter() - started
    ReferenceProfile.fit(ref.iloc[:1000])  # warm-up: imports, first calls
    out = measured(lambda: ReferenceProfile.fit(ref), 1, task["trace"])
    blob = out.pop("result").to_bytes()
    Path(task["profile_path"]).write_bytes(blob)
    return out | {"generate_s": generated, "profile_bytes": len(blob)}


def _compare_task(size: Size, seed: int, task: dict[str, Any], started: float) -> dict[str, Any]:
    from monitoring.drift import ReferenceProfile, compare

    profile = ReferenceProfile.from_bytes(Path(task["profile_path"]).read_bytes())
    if task["parquet"]:
        current: Any = write_parquet(size, seed, Path(task["parquet"]))
        compare(profile, generate(Size(1000, size.columns), seed, current=True))  # warm-up
    else:
        current = generate(size, seed, current=True)
        compare(profile, current.iloc[:1000])  # warm-up
    generated = time.perf_counter() - started
    out = measured(lambda: compare(profile, current), task["repeats"], task["trace"])
    report = out.pop("result")
    if report is None:
        report = compare(profile, current)
    return out | {"generate_s": generated, "psi": {c.column: c.psi for c in report.columns},
                  "drifted": report.drifted_columns}


def _evidently_task(size: Size, seed: int, task: dict[str, Any], started: float) -> dict[str, Any]:
    from evidently import Report
    from evidently.presets import DataDriftPreset

    options = EVIDENTLY_METHODS[task["tool"]]
    ref, cur = generate(size, seed, current=False), generate(size, seed, current=True)
    generated = time.perf_counter() - started
    Report([DataDriftPreset(**options)]).run(reference_data=ref.iloc[:1000], current_data=cur.iloc[:1000])

    def run() -> Any:
        return Report([DataDriftPreset(**options)]).run(reference_data=ref, current_data=cur)

    out = measured(run, task["repeats"], task["trace"])
    snapshot = out.pop("result") or run()
    values, drifted, mistyped = {}, [], []
    for metric in snapshot.dict()["metrics"]:
        config = metric.get("config", {})
        if not config.get("type", "").endswith("ValueDrift"):
            continue
        value, threshold = float(metric["value"]), config["threshold"]
        values[config["column"]] = value
        expected = {"psi": "psi"}.get(config.get("method", ""), "ks" if config["column"].startswith("num") else "chisquare")
        if config.get("method") != expected:  # Evidently inferred another column type than ours
            mistyped.append(f"{config['column']} ({config.get('method')})")
        if (value >= threshold) if config.get("method") == "psi" else (value < threshold):  # psi / p-value
            drifted.append(config["column"])
    return out | {"generate_s": generated, "values": values, "drifted": drifted, "mistyped": mistyped}


def run_in_child(task: dict[str, Any]) -> dict[str, Any]:
    """Run :func:`worker` in a fresh spawned process (its RSS is this measurement's alone)."""
    context = multiprocessing.get_context("spawn")
    with context.Pool(1, maxtasksperchild=1) as pool:
        return pool.apply(worker, (task,))


# --- measuring all sizes ------------------------------------------------------------------------


@dataclass
class Measurement:
    """One tool at one size."""

    size: str
    tool: str
    seconds: list[float] = field(default_factory=list)
    rss_before_mib: float | None = None
    peak_rss_mib: float | None = None
    extra_rss_mib: float | None = None
    tracemalloc_peak_mib: float | None = None
    generate_s: float | None = None
    values: dict[str, float] = field(default_factory=dict)   # per-column PSI (or Evidently's value)
    drifted: list[str] = field(default_factory=list)
    note: str | None = None

    @property
    def median(self) -> float | None:
        return statistics.median(self.seconds) if self.seconds else None


def measure_size(size: Size, with_evidently: bool, args: argparse.Namespace, workdir: Path,
                 progress: Any) -> dict[str, Measurement]:
    """ours fit, ours compare, then (if asked) each Evidently preset, each in its own process."""
    profile_path = workdir / f"profile-{size.rows}x{size.columns}-{args.seed}.npz"
    parquet = (str(workdir / f"current-{size.rows}x{size.columns}-{args.seed}.parquet")
               if args.current_format == "parquet" else None)
    base = {"size": (size.rows, size.columns), "seed": args.seed, "profile_path": str(profile_path),
            "parquet": parquet}
    tools = ["ours fit", "ours compare"] + (list(EVIDENTLY_METHODS) if with_evidently else [])
    results = {}
    for tool in tools:
        evidently = tool.startswith("evidently")
        repeats = 1 if tool == "ours fit" else (evidently_repeats(size, args) if evidently else args.repeats)
        trace = args.tracemalloc == "all" or (args.tracemalloc != "none" and not evidently) or (
            args.tracemalloc == "auto" and size.rows < 1_000_000)
        log.info("%s: %s (%d timed run%s%s)", size.label, tool, repeats, "s" * (repeats > 1),
                 ", then one traced" if trace else "")
        m = Measurement(size.label, tool)
        try:
            out = run_in_child(base | {"tool": tool, "repeats": repeats, "trace": trace})
        except Exception as exc:  # a failing tool is a result to report, not a crash
            m.note = f"failed: {type(exc).__name__}: {str(exc).splitlines()[0][:80] if str(exc) else ''}"
            log.exception("%s failed", tool)
        else:
            for key in ("seconds", "rss_before_mib", "peak_rss_mib", "extra_rss_mib", "tracemalloc_peak_mib",
                        "generate_s"):
                setattr(m, key, out[key])
            m.drifted = out.get("drifted", [])
            if out.get("mistyped"):
                m.note = f"Evidently typed columns unlike ours: {', '.join(out['mistyped'][:5])}"
            m.values = out.get("psi") or out.get("values") or {}
        results[tool] = m
        progress.update(1)
    if parquet:
        Path(parquet).unlink(missing_ok=True)
    profile_path.unlink(missing_ok=True)
    return results


def evidently_repeats(size: Size, args: argparse.Namespace) -> int:
    if args.evidently_repeats is not None:
        return args.evidently_repeats
    return 1 if size.rows >= 1_000_000 else 3


# --- reporting ----------------------------------------------------------------------------------


def table(results: dict[str, dict[str, Measurement]]) -> str:
    header = ["size", "tool", "median s", "(min–max)", "runs", "x ours compare", "x ours fit+compare",
              "RSS data MiB", "peak RSS MiB", "extra MiB", "tracemalloc MiB"]
    rows = [header]
    for label, by_tool in results.items():
        fit, ours = by_tool.get("ours fit"), by_tool.get("ours compare")
        both = fit.median + ours.median if fit and ours and fit.median and ours.median else None
        for m in by_tool.values():
            ratio = ratio_both = "-"
            if m.tool.startswith("evidently") and m.median and ours and ours.median:
                ratio = f"{m.median / ours.median:.0f}x"
                ratio_both = f"{m.median / both:.0f}x" if both else "-"
            rows.append([label, m.tool, f"{m.median:.2f}" if m.median is not None else (m.note or "-"),
                         f"({min(m.seconds):.2f}–{max(m.seconds):.2f})" if m.seconds else "", str(len(m.seconds)),
                         ratio, ratio_both, _mib(m.rss_before_mib), _mib(m.peak_rss_mib), _mib(m.extra_rss_mib),
                         _mib(m.tracemalloc_peak_mib)])
    widths = [max(len(r[i]) for r in rows) for i in range(len(header))]
    lines = ["  ".join(c.ljust(w) for c, w in zip(r, widths, strict=True)).rstrip() for r in rows]
    lines.insert(1, "  ".join("-" * w for w in widths))
    return "\n".join(lines)


def _mib(value: float | None) -> str:
    return "-" if value is None else f"{value:,.0f}"


def agreement(results: dict[str, dict[str, Measurement]]) -> list[str]:
    """Per size: max |our PSI - Evidently's PSI| over numeric and categorical columns, and how many
    columns each flags (ours: our rules; Evidently: its PSI >= 0.1 and its KS/chi² p < 0.05)."""
    lines = []
    for label, by_tool in results.items():
        ours, psi = by_tool.get("ours compare"), by_tool.get("evidently psi")
        if not ours or not psi or not ours.values or not psi.values:
            continue
        diffs: dict[str, dict[str, float]] = {"numeric": {}, "categorical": {}}
        for column, value in psi.values.items():
            if ours.values.get(column) is not None:
                diffs["numeric" if column.startswith("num") else "categorical"][column] = abs(ours.values[column] - value)
        parts = []
        for kind, by_column in diffs.items():
            if by_column:
                worst = max(by_column, key=by_column.__getitem__)
                parts.append(f"{kind} max |diff| {by_column[worst]:.4f} ({worst}: ours {ours.values[worst]:.4f}, "
                             f"Evidently {psi.values[worst]:.4f}), median {statistics.median(by_column.values()):.4f} "
                             f"over {len(by_column)} columns")
        flags = [f"ours {len(ours.drifted)}"] + [f"{m.tool} {len(m.drifted)}" for m in by_tool.values()
                                                  if m.tool.startswith("evidently") and m.values]
        lines.append(f"{label}: PSI ours vs Evidently: {'; '.join(parts)}")
        lines.append(f"{label}: drifted columns: {', '.join(flags)}")
    return lines


def goals(results: dict[str, dict[str, Measurement]]) -> list[dict[str, Any]]:
    out = []
    label, factor = GOAL_SPEEDUP
    by_tool = results.get(label, {})
    ours = by_tool.get("ours compare")
    for tool in EVIDENTLY_METHODS:
        name = f"compare at least {factor:.0f}x faster than Evidently ({tool}) at {label}"
        peer = by_tool.get(tool)
        if not ours or not peer or ours.median is None or peer.median is None:
            out.append({"goal": name, "status": "NOT RUN", "detail": "size or tool not run"})
            continue
        speedup = peer.median / ours.median
        fit = by_tool.get("ours fit")
        detail = f"ours {ours.median:.2f} s, Evidently {peer.median:.2f} s: {speedup:.0f}x"
        if fit and fit.median:
            detail += f" (fit + compare {fit.median + ours.median:.2f} s: {peer.median / (fit.median + ours.median):.0f}x)"
        out.append({"goal": name, "status": "PASS" if speedup >= factor else "FAIL", "detail": detail})
    label, limit = GOAL_LARGE
    ours = results.get(label, {}).get("ours compare")
    name = f"compare under {limit:.0f} s at {label} on {os.cpu_count()} cores"
    if not ours or ours.median is None:
        out.append({"goal": name, "status": "NOT RUN", "detail": "size not run"})
    else:
        fit = results[label].get("ours fit")
        detail = f"ours {ours.median:.2f} s" + (f" (fit, once: {fit.median:.2f} s)" if fit and fit.median else "")
        out.append({"goal": name, "status": "PASS" if ours.median < limit else "FAIL", "detail": detail})
    return out


def environment(args: argparse.Namespace) -> dict[str, str]:
    import evidently
    import pyarrow
    import scipy

    meminfo, cpuinfo = Path("/proc/meminfo"), Path("/proc/cpuinfo")
    mem = next((int(line.split()[1]) / 2**20 for line in meminfo.read_text().splitlines()
                if line.startswith("MemTotal:")), float("nan")) if meminfo.exists() else float("nan")
    cpu = next((line.split(":", 1)[1].strip() for line in cpuinfo.read_text().splitlines()
                if line.startswith("model name")), platform.processor()) if cpuinfo.exists() else ""
    load = ", ".join(f"{x:.2f}" for x in os.getloadavg())
    return {
        "machine": f"{len(os.sched_getaffinity(0))} cores (nproc), {mem:.1f} GiB memory, {cpu}; load average {load}",
        "versions": (f"Evidently {evidently.__version__}, pandas {pd.__version__}, numpy {np.__version__}, "
                     f"scipy {scipy.__version__}, pyarrow {pyarrow.__version__}, Python {platform.python_version()}"),
        "command": shlex.join([_rel(sys.executable), *sys.argv]),
    }


def _rel(path: str) -> str:
    rel = os.path.relpath(path)
    return path if rel.startswith("..") else rel


def print_report(env: dict[str, str], results: dict[str, dict[str, Measurement]], args: argparse.Namespace,
                 verdicts: list[dict[str, Any]]) -> None:
    for key, value in env.items():
        print(f"{key}: {value}")
    current = ("a Parquet path (the time includes reading it)" if args.current_format == "parquet"
               else "a pandas frame in memory")
    print("timed: Evidently Report([DataDriftPreset(...)]).run(reference_data=df, current_data=df), pandas "
          f"frames in memory; ours: ReferenceProfile.fit(df) once, then compare(profile, current) on {current}. "
          "Each tool in its own spawned process after an untimed warm-up; 'x ours' = Evidently's median / ours.")
    print("memory: RSS data = the process's RSS before the timed runs (the frames it holds); peak RSS = "
          "highest RSS during them; extra = peak - data; tracemalloc = peak Python allocations in one "
          "more, untimed run")
    print()
    print(table(results))
    print()
    for line in agreement(results):
        print(line)
    for by_tool in results.values():
        for m in by_tool.values():
            if m.note and m.median is not None:
                print(f"WARNING {m.size} {m.tool}: {m.note}")
    print()
    for g in verdicts:
        print(f"{g['status']:<7} {g['goal']}: {g['detail']}")


# --- command line -------------------------------------------------------------------------------


def parse_sizes(text: str) -> list[Size]:
    """``200k:20,1m:60`` -> sizes as (rows, columns); ``none`` -> no sizes."""
    if text.strip().lower() == "none":
        return []
    sizes = []
    for part in filter(None, (p.strip() for p in text.split(","))):
        rows, sep, cols = part.partition(":")
        if not sep or not cols.isdigit() or int(cols) < 2:
            raise argparse.ArgumentTypeError(f"size {part!r} needs ROWS:COLUMNS (at least 2), e.g. 1m:60")
        sizes.append(Size(parse_count(rows), int(cols)))
    return sizes


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=(__doc__ or "").split("\n\n")[0],
                                formatter_class=argparse.ArgumentDefaultsHelpFormatter)
    p.add_argument("--sizes", type=parse_sizes, default="200k:20,1m:60",
                   help="ROWS:COLUMNS run with both tools, comma separated (rows of reference and of current)")
    p.add_argument("--ours-only-sizes", type=parse_sizes, default="10m:100",
                   help="ROWS:COLUMNS run with ours alone, or 'none'")
    p.add_argument("--repeats", type=int, default=3, help="timed compare runs per size (median reported)")
    p.add_argument("--evidently-repeats", type=int, default=None,
                   help="timed Evidently runs per preset and size (default: 1 from 1M rows, else 3)")
    p.add_argument("--current-format", choices=("pandas", "parquet"), default="pandas",
                   help="how compare gets the current data: a pandas frame in memory, or a Parquet path "
                        "(then its time includes reading the file)")
    p.add_argument("--tracemalloc", choices=("auto", "all", "ours", "none"), default="auto",
                   help="which measurements get one extra, untimed tracemalloc run; auto: ours always, "
                        "Evidently below 1M rows (at 1M x 60 one Evidently run takes minutes)")
    p.add_argument("--workdir", type=Path, default=Path(tempfile.gettempdir()) / "tidemark-bench-drift",
                   help="profiles (and Parquet files) passed between the processes")
    p.add_argument("--seed", type=int, default=7)
    p.add_argument("--json", type=Path, default=None, metavar="PATH", help="also write the results here")
    args = p.parse_args(argv)
    if args.repeats < 1 or (args.evidently_repeats is not None and args.evidently_repeats < 1):
        p.error("--repeats and --evidently-repeats must be at least 1")
    if not args.sizes and not args.ours_only_sizes:
        p.error("nothing to run: give --sizes or --ours-only-sizes")
    return args


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(name)s %(message)s", stream=sys.stderr)
    from tqdm import tqdm
    from tqdm.contrib.logging import logging_redirect_tqdm

    workdir = args.workdir.resolve()
    workdir.mkdir(parents=True, exist_ok=True)
    env = environment(args)
    plan = [(s, True) for s in args.sizes] + [(s, False) for s in args.ours_only_sizes]
    total = sum(2 + len(EVIDENTLY_METHODS) * both for _, both in plan)
    results: dict[str, dict[str, Measurement]] = {}
    with logging_redirect_tqdm(), tqdm(total=total, desc="measurements", unit="process", file=sys.stderr,
                                       disable=None) as progress:
        for size, with_evidently in plan:
            results[size.label] = measure_size(size, with_evidently, args, workdir, progress)
    env["load average at end"] = ", ".join(f"{x:.2f}" for x in os.getloadavg())
    verdicts = goals(results)
    print_report(env, results, args, verdicts)
    if args.json:
        rows = [asdict(m) | {"median": m.median} for by_tool in results.values() for m in by_tool.values()]
        args.json.write_text(json.dumps({**env, "current_format": args.current_format, "results": rows,
                                         "agreement": agreement(results), "goals": verdicts}, indent=2) + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
