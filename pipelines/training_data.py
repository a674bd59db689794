"""Entity frames for training: labelled transactions, as the model would have seen them."""

from __future__ import annotations

from datetime import datetime
from pathlib import Path

import numpy as np
import pandas as pd
import pyarrow.compute as pc
import pyarrow.dataset as ds

from features.errors import DataNotFoundError


def last_event_time(raw_dir: Path) -> pd.Timestamp:
    """The newest transaction event time in the raw data (UTC)."""
    table = ds.dataset(raw_dir / "transactions", format="parquet", partitioning="hive").to_table(
        columns=["event_timestamp"])
    return pd.Timestamp(pc.max(table.column("event_timestamp")).as_py())


def labelled_transactions(raw_dir: Path, *, label_cutoff: datetime, sample: int | None = None,
                          seed: int = 0) -> pd.DataFrame:
    """Transactions whose fraud label was known at ``label_cutoff`` (UTC), one row each.

    Columns: ``transaction_id``, ``customer_id``, ``merchant_id``, ``amount`` (EUR), ``channel``,
    ``event_timestamp`` (the authorisation time, which is the prediction time) and ``is_fraud``.
    A label that arrived after the cutoff is unknown, so its transaction is left out (not
    counted as legitimate). ``sample`` keeps a uniform random subset of that many rows.
    """
    txn_dir, label_dir = raw_dir / "transactions", raw_dir / "labels"
    for folder in (txn_dir, label_dir):
        if not folder.exists():
            raise DataNotFoundError(f"{folder} does not exist; generate data first with `tidemark datagen`")
    cutoff = pd.Timestamp(label_cutoff)
    cutoff = (cutoff.tz_convert("UTC") if cutoff.tzinfo else cutoff.tz_localize("UTC")).floor("us")
    labels = ds.dataset(label_dir, format="parquet", partitioning="hive").to_table(
        columns=["transaction_id", "is_fraud"], filter=ds.field("label_timestamp") <= cutoff.to_pydatetime(),
    ).to_pandas()
    txns = ds.dataset(txn_dir, format="parquet", partitioning="hive").to_table(
        columns=["transaction_id", "customer_id", "merchant_id", "amount", "channel", "event_timestamp"],
    ).to_pandas()
    frame = txns.merge(labels, on="transaction_id", how="inner")
    if sample is not None and sample < len(frame):
        rows = np.random.default_rng(seed).choice(len(frame), size=sample, replace=False)
        frame = frame.iloc[np.sort(rows)]
    return frame.sort_values(["event_timestamp", "transaction_id"]).reset_index(drop=True)
