"""Writing small offline tables in tidemark's layout (Parquet partitioned by ``date=``) for tests."""

from __future__ import annotations

from pathlib import Path

import pandas as pd
import pyarrow as pa
import pyarrow.parquet as pq


def write_by_date(df: pd.DataFrame, table_dir: Path) -> None:
    """Write ``df`` under ``table_dir/date=YYYY-MM-DD/`` by its ``event_timestamp`` (microseconds)."""
    df = df.assign(date=df["event_timestamp"].dt.strftime("%Y-%m-%d"))
    for day, part in df.groupby("date"):
        folder = table_dir / f"date={day}"
        folder.mkdir(parents=True, exist_ok=True)
        pq.write_table(pa.Table.from_pandas(part.drop(columns="date"), preserve_index=False),
                       folder / "part-0.parquet", coerce_timestamps="us")


AUTHORISATION = pd.Timedelta("1s")  # a payment's arrival after its event: the round trip before it is recorded


def write_transactions(payments: pd.DataFrame, raw_dir: Path) -> pd.DataFrame:
    """Write raw payments, the history the fraud example's customer windows are computed from, under
    ``raw_dir/transactions/date=YYYY-MM-DD/``: ``payments`` needs ``customer_id``,
    ``event_timestamp`` and ``amount``; ``transaction_id`` (1, 2, ...), ``merchant_id`` (1),
    ``channel`` ("pos") and ``arrival_timestamp`` (one :data:`AUTHORISATION` after the event)
    are filled in when absent. Returns what was written."""
    full = payments.copy()
    defaults = {"transaction_id": lambda: range(1, len(full) + 1), "merchant_id": lambda: 1, "channel": lambda: "pos",
                "arrival_timestamp": lambda: full["event_timestamp"] + AUTHORISATION}
    for column, value in defaults.items():
        if column not in full.columns:
            full[column] = value()
    full = full.astype({"transaction_id": "int64", "customer_id": "int64", "merchant_id": "int64",
                        "amount": "float64"})
    write_by_date(full, raw_dir / "transactions")
    return full
