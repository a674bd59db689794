"""Run Feast's own universal integration tests against tidemark's Feast plugins; print the counts.

Feast documents one way for a plugin author to check a store: its universal test suite, pointed
at the author's stores through a repo-config module named by ``FULL_REPO_CONFIGS_MODULE``. This
script does that for ``features.offline_store.SparkAsofOfflineStore`` (over Feast's own Spark
data sources) and ``features.online_store.PackedRedisOnlineStore`` (on a throwaway
``redis-server`` it starts on a free loopback port); the configs are in
``benchmarks/feast_universal_configs.py``. No Feast code is copied here: the suite runs from a
Feast checkout kept outside this repository.

One-time set-up (Feast's test dependencies stay out of the project's locked environment)::

    git clone /path/to/feast /tmp/feast-src       # or: git clone https://github.com/feast-dev/feast
    python -m venv /tmp/feastenv                   # with the project's interpreter: .venv/bin/python
    echo "$(realpath .venv/lib/python3.11/site-packages)" \\
        > /tmp/feastenv/lib/python3.11/site-packages/tidemark_venv.pth   # reuse the locked packages
    /tmp/feastenv/bin/pip install testcontainers assertpy pytest-asyncio pytest-env pytest-xdist \\
        boto3 minio python-keycloak google-cloud-bigquery   # what Feast's test modules import

(A Feast checkout whose full checkout fails on missing large files can be limited to what runs:
``git -C /tmp/feast-src sparse-checkout set sdk/python protos``.)

Run it (from any tidemark worktree; that checkout's ``features`` package is the one tested)::

    .venv/bin/python benchmarks/feast_universal.py --feast-src /tmp/feast-src
    .venv/bin/python benchmarks/feast_universal.py --feast-src /tmp/feast-src --modules online
    .venv/bin/python benchmarks/feast_universal.py --feast-src /tmp/feast-src --stores feast  # reference
    .venv/bin/python benchmarks/feast_universal.py --feast-src /tmp/feast-src --tidemark /tmp/other-worktree

It prints pass/fail/skip/error counts per module and every failing test id with a one-line
reason; ``--junit-dir`` keeps pytest's JUnit XML. The exit code is 0 whatever the counts (it
reports, it does not gate). The counts before and after each fix are in
``docs/feast_compatibility.md``.
"""

from __future__ import annotations

import argparse
import os
import re
import subprocess
import sys
import tempfile
import time
import xml.etree.ElementTree as ET
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path

HERE = Path(__file__).resolve().parent
DEFAULT_TIDEMARK = HERE.parent

#: Feast's universal test modules this script runs, by the name the report uses.
MODULES: dict[str, str] = {
    "historical": "tests/integration/offline_store/test_universal_historical_retrieval.py",
    "online": "tests/integration/online_store/test_universal_online.py",
    "materialization": "tests/integration/offline_store/test_universal_materialization.py",
    "offline_write": "tests/integration/offline_store/test_offline_write.py",
}
OUTCOMES = ("passed", "failed", "skipped", "error")


@dataclass
class ModuleResult:
    """The outcomes of one module's tests, and a one-line reason for each that did not pass."""

    counts: Counter[str] = field(default_factory=Counter)
    problems: list[tuple[str, str, str]] = field(default_factory=list)  # (outcome, test id, reason)


def _one_line(text: str | None, width: int = 220) -> str:
    """The first meaningful line of a failure message: the exception, not pytest's banner."""
    lines = [line.strip() for line in (text or "").splitlines() if line.strip()]
    for line in lines:
        if line.startswith(("E ", "assert")) or "Error" in line or "Exception" in line:
            return line.removeprefix("E ").strip()[:width]
    return (lines[0] if lines else "")[:width]


def _short_id(test_id: str) -> str:
    """Feast's environment parameters print as ``ParameterSet(values=(CONFIG,), marks=[], id=None)``."""
    return re.sub(r"ParameterSet\(values=\((.*?),\), marks=\[\], id=None\)", r"\1", test_id)


def parse_junit(path: Path) -> dict[str, ModuleResult]:
    """Outcomes per module (keyed as in :data:`MODULES`) from pytest's JUnit XML."""
    by_file = {Path(p).stem: name for name, p in MODULES.items()}
    results = {name: ModuleResult() for name in MODULES}
    for case in ET.parse(path).getroot().iter("testcase"):
        classname = case.get("classname", "")
        # a module that failed to import is one case named for the module, with an empty classname
        parts = (classname or case.get("name", "")).split(".")
        module = next((by_file[part] for part in parts if part in by_file), None)
        if module is None:
            continue
        test_id = _short_id(f"{classname.split('.')[-1]}::{case.get('name')}")
        outcome, reason = "passed", ""
        for child in case:
            if child.tag in ("failure", "error", "skipped"):
                outcome = {"failure": "failed", "error": "error", "skipped": "skipped"}[child.tag]
                reason = _one_line(child.get("message") or child.text)
                break
        results[module].counts[outcome] += 1
        if outcome != "passed":
            results[module].problems.append((outcome, test_id, reason))
    return results


def start_redis(root: Path) -> tuple[object, str]:
    """A throwaway redis-server on a free loopback port (stopped by the caller)."""
    sys.path.insert(0, str(DEFAULT_TIDEMARK))
    from tests.integration.redis_servers import start_redis as start  # this repository's test helper

    server = start(root / "redis")
    return server, server.url


def run_suite(args: argparse.Namespace, redis_url: str, work: Path) -> Path:
    """Run the selected modules of Feast's suite in one pytest process; returns the JUnit XML path."""
    sdk = args.feast_src / "sdk" / "python"
    junit = args.junit_dir / f"feast_universal_{args.stores}.xml"
    junit.parent.mkdir(parents=True, exist_ok=True)
    env = dict(os.environ)
    env.update({
        # Feast's sdk/python first: its ``tests`` package, not this repository's tests folder.
        "PYTHONPATH": os.pathsep.join([str(sdk), str(args.tidemark), str(HERE)]),
        "FULL_REPO_CONFIGS_MODULE": "feast_universal_configs",
        "FEAST_IS_LOCAL_TEST": "True",  # no BigQuery/Redshift/cloud stores imported or added
        "TIDEMARK_UNIVERSAL_REDIS_URL": redis_url,
        "TIDEMARK_UNIVERSAL_STORES": args.stores,
        "TIDEMARK_UNIVERSAL_REDIS_KEY": args.redis_key,
        "TIDEMARK_UNIVERSAL_CREATED_FILTER": args.created_filter,
        "TIDEMARK_HOME": str(work / "tidemark_home"),
        "PYSPARK_PYTHON": args.python,
        "PYSPARK_DRIVER_PYTHON": args.python,
    })
    command = [args.python, "-m", "pytest", "--integration", "-p", "no:cacheprovider", "-q",
               "-o", "addopts=--tb=short", "--continue-on-collection-errors", f"--junitxml={junit}", f"--timeout={args.timeout_s}",
               *[MODULES[m] for m in args.modules], *args.pytest_args]
    print(f"$ cd {sdk} && {' '.join(command)}", flush=True)
    log_path = junit.with_suffix(".log")
    with open(log_path, "w") as log:
        subprocess.run(command, cwd=sdk, env=env, stdout=log, stderr=subprocess.STDOUT, check=False)
    print(f"pytest output: {log_path}")
    if not junit.exists():
        tail = "\n".join(log_path.read_text(errors="replace").splitlines()[-30:])
        raise SystemExit(f"pytest wrote no JUnit report; its output ends:\n{tail}")
    return junit


def print_report(results: dict[str, ModuleResult], modules: list[str], stores: str, seconds: float) -> None:
    """A table of counts per module, then each test that did not pass with its reason."""
    print(f"\nFeast universal tests, stores={stores}, {seconds:.0f} s")
    print(f"{'module':<16}" + "".join(f"{o:>9}" for o in OUTCOMES))
    total: Counter[str] = Counter()
    for name in modules:
        counts = results[name].counts
        total.update(counts)
        print(f"{name:<16}" + "".join(f"{counts[o]:>9}" for o in OUTCOMES))
    print(f"{'total':<16}" + "".join(f"{total[o]:>9}" for o in OUTCOMES))
    for name in modules:
        for outcome, test_id, reason in results[name].problems:
            if outcome != "skipped":
                print(f"{outcome.upper():<7} {name}: {test_id}\n        {reason}")
    skipped = [(n, t, r) for n in modules for o, t, r in results[n].problems if o == "skipped"]
    if skipped:
        print("\nskipped:")
        for name, test_id, reason in skipped:
            print(f"  {name}: {test_id}: {reason}")


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--feast-src", type=Path, required=True, help="a Feast checkout outside this repository")
    parser.add_argument("--tidemark", type=Path, default=DEFAULT_TIDEMARK,
                        help="the tidemark checkout whose plugins are tested (default: this one)")
    parser.add_argument("--python", default="/tmp/feastenv/bin/python",
                        help="an interpreter with Feast's test dependencies (see the set-up above)")
    parser.add_argument("--modules", default=",".join(MODULES), help=f"comma-separated, of {', '.join(MODULES)}")
    parser.add_argument("--stores", choices=("tidemark", "feast"), default="tidemark",
                        help="tidemark's plugins, or Feast's spark + redis stores as the reference")
    parser.add_argument("--redis-key", choices=("url", "connection_string"), default="url",
                        help="how tidemark's online store is given the Redis address")
    parser.add_argument("--created-filter", choices=("on", "off"), default="on",
                        help="tidemark's created-timestamp filter (on, its default) or Feast's semantics (off)")
    parser.add_argument("--timeout-s", type=int, default=300, help="per test (pytest-timeout)")
    parser.add_argument("--junit-dir", type=Path, default=Path(tempfile.gettempdir()) / "feast_universal",
                        help="where the JUnit XML and pytest's output are kept")
    parser.add_argument("pytest_args", nargs="*", help="passed to pytest after --, e.g. -- -k 'not async'")
    args = parser.parse_args(argv)
    args.feast_src, args.tidemark = args.feast_src.resolve(), args.tidemark.resolve()
    args.modules = [m.strip() for m in args.modules.split(",") if m.strip()]
    unknown = [m for m in args.modules if m not in MODULES]
    if unknown:
        parser.error(f"unknown module(s) {unknown}; known: {', '.join(MODULES)}")
    if args.tidemark in args.feast_src.parents or args.feast_src == args.tidemark:
        parser.error("--feast-src must lie outside the tidemark checkout (none of Feast's code goes into it)")
    if not (args.feast_src / "sdk/python/tests/universal/feature_repos/repo_configuration.py").is_file():
        parser.error(f"{args.feast_src} is not a Feast checkout (no sdk/python/tests/universal/feature_repos)")
    if not Path(args.python).is_file():
        parser.error(f"no interpreter at {args.python}: create it as the module docstring says, or pass --python")

    with tempfile.TemporaryDirectory(prefix="feast_universal_") as tmp:
        work = Path(tmp)
        server, url = start_redis(work)
        started = time.monotonic()
        try:
            junit = run_suite(args, url, work)
            results = parse_junit(junit)
        finally:
            server.stop()  # type: ignore[attr-defined]
        print_report(results, args.modules, args.stores, time.monotonic() - started)
    return 0


if __name__ == "__main__":
    sys.exit(main())
