"""The fraud example's entity frames for training: labelled transactions, as the model would have seen them."""

from __future__ import annotations

from datetime import datetime
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import pyarrow.compute as pc
import pyarrow.dataset as ds

from features.errors import DataNotFoundError
from pipelines.training_data import utc_timestamp


def last_event_time(raw_dir: Path) -> pd.Timestamp:
    """The newest transaction event time in the raw data (UTC)."""
    return _event_time(raw_dir, pc.max)


def first_event_time(raw_dir: Path) -> pd.Timestamp:
    """The oldest transaction event time in the raw data (UTC)."""
    return _event_time(raw_dir, pc.min)


def _event_time(raw_dir: Path, pick: Any) -> pd.Timestamp:
    folder = raw_dir / "transactions"
    if not folder.exists():
        raise DataNotFoundError(f"{folder} does not exist; generate data first with `tidemark datagen`")
    table = ds.dataset(folder, format="parquet", partitioning="hive").to_table(columns=["event_timestamp"])
    if table.num_rows == 0:
        raise DataNotFoundError(f"{folder} holds no transactions; generate data with `tidemark datagen`")
    return utc_timestamp(pick(table.column("event_timestamp")).as_py())


def labelled_transactions(raw_dir: Path, *, label_cutoff: datetime, sample: int | None = None,
                          seed: int = 0, events_from: datetime | None = None,
                          events_until: datetime | None = None) -> pd.DataFrame:
    """Transactions whose fraud label was known at ``label_cutoff`` (UTC), one row each.

    Columns: ``transaction_id``, ``customer_id``, ``merchant_id``, ``amount`` (EUR), ``channel``,
    ``event_timestamp`` (the authorisation time, which is the prediction time) and ``is_fraud``.
    A label that arrived after the cutoff is unknown, so its transaction is left out (not
    counted as legitimate); of several labels for one payment, the newest by the cutoff counts.
    ``events_from`` / ``events_until`` (UTC, inclusive) keep payments
    authorised in that window. ``sample`` keeps a uniform random subset of that many rows.
    """
    txn_dir, label_dir = raw_dir / "transactions", raw_dir / "labels"
    for folder in (txn_dir, label_dir):
        if not folder.exists():
            raise DataNotFoundError(f"{folder} does not exist; generate data first with `tidemark datagen`")
    # A label never arrives before its payment, so labels older than the window are not read.
    labels = known_labels(label_dir, label_cutoff=label_cutoff, labels_from=events_from)
    when = ds.field("event_timestamp")
    window = [when >= _utc(events_from)] if events_from is not None else []
    window += [when <= _utc(events_until)] if events_until is not None else []
    txns = ds.dataset(txn_dir, format="parquet", partitioning="hive").to_table(
        columns=["transaction_id", "customer_id", "merchant_id", "amount", "channel", "event_timestamp"],
        filter=_all(window),
    ).to_pandas()
    frame = txns.merge(labels, on="transaction_id", how="inner")
    if sample is not None and sample < len(frame):
        rows = np.random.default_rng(seed).choice(len(frame), size=sample, replace=False)
        frame = frame.iloc[np.sort(rows)]
    return frame.sort_values(["event_timestamp", "transaction_id"]).reset_index(drop=True)


def known_labels(label_dir: Path, *, label_cutoff: datetime, labels_from: datetime | None = None) -> pd.DataFrame:
    """The fraud label of each payment as known at ``label_cutoff`` (UTC): ``transaction_id``, ``is_fraud``.

    Reads ``label_dir`` (``raw/labels``, hive-partitioned Parquet). Labels that arrived after the
    cutoff are unknown; of several labels for one payment, the newest by the cutoff counts.
    ``labels_from`` (UTC, inclusive) skips labels that arrived earlier.
    """
    label_time = ds.field("label_timestamp")
    known = [label_time <= _utc(label_cutoff)] + ([label_time >= _utc(labels_from)] if labels_from is not None else [])
    labels = ds.dataset(label_dir, format="parquet", partitioning="hive").to_table(
        columns=["transaction_id", "is_fraud", "label_timestamp"], filter=_all(known),
    ).to_pandas()
    # A corrected label replaces the earlier one: keep the newest known by the cutoff.
    return (labels.sort_values(["transaction_id", "label_timestamp"], kind="stable")
            .drop_duplicates("transaction_id", keep="last").drop(columns="label_timestamp").reset_index(drop=True))


def count_transactions(raw_dir: Path, *, events_from: datetime | None, events_until: datetime) -> int:
    """How many payments were authorised in ``[events_from, events_until]`` (UTC), labelled or not."""
    when = ds.field("event_timestamp")
    window = [when <= _utc(events_until)] + ([when >= _utc(events_from)] if events_from is not None else [])
    return int(ds.dataset(raw_dir / "transactions", format="parquet", partitioning="hive").count_rows(
        filter=_all(window)))


def _utc(moment: datetime) -> datetime:
    return utc_timestamp(moment).floor("us").to_pydatetime()


def _all(conditions: list[ds.Expression]) -> ds.Expression | None:
    combined = None
    for condition in conditions:
        combined = condition if combined is None else combined & condition
    return combined
