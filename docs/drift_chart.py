"""Regenerate docs/drift_chart.png: transactions of the covariate_shift scenario after its drift
start, against a profile of the month before the last 30 days of training data.

    TIDEMARK_HOME=/tmp/drifthome .venv/bin/tidemark datagen --rows 200000 --scenario covariate_shift
    .venv/bin/python docs/drift_chart.py /tmp/drifthome/raw docs/drift_chart.png
"""

from __future__ import annotations

import sys
from pathlib import Path

import pandas as pd

from monitoring.chart import drift_chart
from monitoring.drift import ReferenceProfile, compare


def main(raw: Path, out: Path) -> None:
    """Profile the training window, compare the drifted window, draw the chart."""
    tx = pd.read_parquet(raw / "transactions", columns=["merchant_id", "amount", "channel", "event_timestamp"])
    merchants = pd.read_parquet(raw / "merchants", columns=["merchant_id", "category", "country"])
    tx = tx.merge(merchants, on="merchant_id", how="left").assign(hour=lambda d: d.event_timestamp.dt.hour)
    drift_start = pd.Timestamp("2026-03-31", tz="UTC")  # the generator's default: 75% of 120 days
    columns = ["amount", "hour", "channel", "category", "country"]
    reference = tx[tx.event_timestamp < drift_start - pd.Timedelta(days=30)][columns]
    current = tx[tx.event_timestamp >= drift_start][columns]
    report = compare(ReferenceProfile.fit(reference), current)
    for c in report.columns:
        print(f"{c.column:<10} psi {c.psi:.4f}  effect {c.effect:.4f}  drifted {c.drifted}  {c.rule or ''}")
    drift_chart(report, out)


if __name__ == "__main__":
    main(Path(sys.argv[1]), Path(sys.argv[2]))
