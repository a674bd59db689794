"""The ``tidemark`` command line.

    tidemark datagen --rows 1000000 --seed 7 --scenario baseline
    tidemark features build [--start 2026-01-01 --end 2026-01-31]
    tidemark features list
    tidemark demo

Settings come from ``TIDEMARK_*`` environment variables, read once here.
"""

from __future__ import annotations

import argparse
import logging
import sys
from collections.abc import Sequence
from datetime import date

from features.errors import TidemarkError
from features.settings import Settings


def main(argv: Sequence[str] | None = None) -> int:
    """Run the CLI; returns the process exit code (2 for a tidemark error, with its message)."""
    parser = _parser()
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO if args.verbose else logging.WARNING,
                        format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    settings = Settings.from_env()
    try:
        return int(args.run(settings, args) or 0)
    except TidemarkError as exc:
        print(f"tidemark: error: {exc}", file=sys.stderr)
        return 2


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="tidemark", description=__doc__.split("\n\n")[0])
    parser.add_argument("-v", "--verbose", action="store_true", help="log progress")
    commands = parser.add_subparsers(required=True, metavar="COMMAND")

    gen = commands.add_parser("datagen", help="generate raw card transactions, labels and profiles")
    gen.add_argument("--rows", type=int, default=1_000_000, help="transactions to generate")
    gen.add_argument("--seed", type=int, default=7)
    gen.add_argument("--scenario", default="baseline",
                     choices=["baseline", "covariate_shift", "new_category", "concept_drift"])
    gen.add_argument("--start", type=date.fromisoformat, default=date(2026, 1, 1), help="first day (UTC)")
    gen.add_argument("--days", type=int, default=120)
    gen.add_argument("--drift-start", type=date.fromisoformat, default=None,
                     help="first day the scenario applies (default: after 75%% of the days)")
    gen.set_defaults(run=_datagen)

    feats = commands.add_parser("features", help="feature tables and definitions")
    feat_cmds = feats.add_subparsers(required=True, metavar="ACTION")
    build = feat_cmds.add_parser("build", help="compute offline feature tables on Spark")
    build.add_argument("--start", type=date.fromisoformat, default=None, help="first day (UTC), inclusive")
    build.add_argument("--end", type=date.fromisoformat, default=None, help="last day (UTC), inclusive")
    build.set_defaults(run=_features_build)
    listing = feat_cmds.add_parser("list", help="list registered feature references")
    listing.set_defaults(run=_features_list)

    demo = commands.add_parser("demo", help="generate data, build features, build a training frame")
    demo.add_argument("--rows", type=int, default=300_000)
    demo.add_argument("--seed", type=int, default=7)
    demo.set_defaults(run=_demo)
    return parser


def _datagen(settings: Settings, args: argparse.Namespace) -> int:
    from pipelines.datagen import DatagenConfig, generate

    config = DatagenConfig(rows=args.rows, seed=args.seed, scenario=args.scenario, start=args.start,
                           days=args.days, drift_start=args.drift_start)
    print(generate(settings.raw_dir, config).table())
    return 0


def _features_build(settings: Settings, args: argparse.Namespace) -> int:
    from features.feature_jobs import build_features
    from features.spark import spark_session

    summary = build_features(spark_session(settings.spark), settings.raw_dir, settings.offline_dir,
                             start=args.start, end=args.end)
    print(summary.table())
    return 0


def _features_list(settings: Settings, args: argparse.Namespace) -> int:
    from features.sdk import FeatureClient

    for ref in FeatureClient(settings).feature_references():
        print(ref)
    return 0


def _demo(settings: Settings, args: argparse.Namespace) -> int:
    from pipelines.demo import run_demo

    run_demo(settings, rows=args.rows, seed=args.seed)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
