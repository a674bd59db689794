"""The fraud example's commands: ``tidemark datagen …`` and ``tidemark demo …`` run these (the
``datagen`` and ``demo`` entry points of ``feature_repo/tidemark.yaml``), with their own options.

    tidemark datagen --rows 1000000 --seed 7 --scenario baseline [--days 120 | --start D --end D]
    tidemark demo [--rows 200000] [--seed 7]
"""

from __future__ import annotations

import argparse
from collections.abc import Sequence
from datetime import UTC, date, datetime

from examples.fraud.datagen import DatagenConfig, data_window, generate
from examples.fraud.demo import DemoConfig, run_demo
from tidemark.settings import Settings

__all__ = ["datagen", "demo"]


def datagen(settings: Settings, argv: Sequence[str]) -> int:
    """Generate raw card transactions, labels and profiles under ``settings.raw_dir``."""
    gen = argparse.ArgumentParser(prog="tidemark datagen",
                                  description="generate raw card transactions, labels and profiles")
    gen.add_argument("--rows", type=int, default=1_000_000, help="transactions to generate")
    gen.add_argument("--seed", type=int, default=7)
    gen.add_argument("--scenario", default="baseline",
                     choices=["baseline", "covariate_shift", "new_category", "concept_drift"])
    gen.add_argument("--start", type=date.fromisoformat, default=None,
                     help="first day (UTC; default: --days before --end)")
    gen.add_argument("--end", type=date.fromisoformat, default=None, help="last day (UTC; default: today)")
    gen.add_argument("--days", type=int, default=None, help="days of data (default 120)")
    gen.add_argument("--drift-start", type=date.fromisoformat, default=None,
                     help="first day the scenario applies (default: after 75%% of the days)")
    args = gen.parse_args(list(argv))
    # up to today by default: a fixed window would be past every view's TTL on any later date
    start, days = data_window(args.start, args.end, args.days, datetime.now(UTC).date())
    config = DatagenConfig(rows=args.rows, seed=args.seed, scenario=args.scenario, start=start, days=days,
                           drift_start=args.drift_start)
    print(generate(settings.raw_dir, config).table())
    return 0


def demo(settings: Settings, argv: Sequence[str]) -> int:
    """The whole loop (:func:`examples.fraud.demo.run_demo`); 0 when it reached a verdict."""
    parser = argparse.ArgumentParser(prog="tidemark demo", description=(
        "the whole loop: data, features, a champion, serving, drift, retraining, a canary "
        "(on a $TIDEMARK_HOME of its own; reset on each run)"))
    parser.add_argument("--rows", type=int, default=DemoConfig.rows, help="payments to generate")
    parser.add_argument("--seed", type=int, default=DemoConfig.seed)
    args = parser.parse_args(list(argv))
    outcome = run_demo(settings, DemoConfig(rows=args.rows, seed=args.seed))
    return 0 if outcome["outcome"] in ("promoted", "rolled back") or "failed the gate" in outcome["outcome"] else 1
