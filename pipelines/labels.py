"""A model's labels as known at a moment, from its contract's label source: one reader for
training, the gate, the drift job's label check and the canary.

    label table ── rows with ``known_at`` <= cutoff; of several labels of one row id, the newest
        │          (a chargeback that overturns an earlier "legitimate" wins once it is known)
        ▼
    known_labels: row ids, label, prediction time
        │  ⋈ the events table (``entities``) on the row ids, when the labels live apart
        ▼
    labelled_events: the scored events (join keys, request columns, ``event_timestamp`` = the
                     prediction time) in a time window, each with its label as known at the cutoff

Point in time: a label that became known after the cutoff is not used however the files were
written, so a re-run of a past decision sees what was known then.
"""

from __future__ import annotations

from collections.abc import Sequence
from datetime import datetime
from pathlib import Path
from typing import TYPE_CHECKING, Any

import pandas as pd
import pyarrow.dataset as ds

from features.redaction import redact_url
from pipelines.errors import TrainingError
from pipelines.training_data import utc_timestamp

if TYPE_CHECKING:
    from features.sdk import FeatureClient
    from serving.model_contract import LabelSource

__all__ = ["PREDICTION_TIME", "known_labels", "labelled_events", "read_table"]

#: The prediction time's column in what :func:`known_labels` returns (as entity frames name it).
PREDICTION_TIME = "event_timestamp"


def read_table(table: str, *, columns: Sequence[str] | None = None, where: Any = None,
               fc: FeatureClient | None = None) -> pd.DataFrame:
    """A Parquet file or folder (hive partitions allowed; ``where``: a ``pyarrow.dataset`` filter),
    or a Spark table by name (through ``fc``'s session)."""
    if Path(table).exists():
        dataset = ds.dataset(table, format="parquet", partitioning="hive")
        missing = [c for c in columns or () if c not in dataset.schema.names]
        if missing:
            raise TrainingError(f"{redact_url(table)} has no columns {missing}; its columns: {', '.join(dataset.schema.names)}")
        return dataset.to_table(columns=list(columns) if columns else None, filter=where).to_pandas()
    if "://" in table or "/" in table or fc is None:
        raise TrainingError(f"the table {redact_url(table)} does not exist; write it, or fix the label source's path")
    frame: Any = fc.spark.table(table)
    if columns:
        frame = frame.select(*columns)
    return pd.DataFrame(frame.toPandas())


def known_labels(source: LabelSource, *, cutoff: datetime, since: datetime | None = None,
                 fc: FeatureClient | None = None) -> pd.DataFrame:
    """The newest label of each row id known by ``cutoff`` (UTC): the row ids, the label and
    ``event_timestamp`` (the prediction time). ``since``: labels known before it are not read (a
    label never arrives before its prediction)."""
    known = ds.field(source.known_at)
    where = known <= utc_timestamp(cutoff).to_pydatetime()
    if since is not None:
        where &= known >= utc_timestamp(since).to_pydatetime()
    ids = list(source.join_keys)
    columns = list(dict.fromkeys([*ids, source.label, source.prediction_time, source.known_at]))
    table = read_table(source.table, columns=columns, where=where if Path(source.table).exists() else None, fc=fc)
    if not Path(source.table).exists():  # a Spark table: filtered here
        at = pd.to_datetime(table[source.known_at], utc=True)
        keep = at <= utc_timestamp(cutoff)
        table = table[keep & (at >= utc_timestamp(since)) if since is not None else keep]
    table = table[table[source.label].notna()]
    newest = table.sort_values(source.known_at, kind="stable").drop_duplicates(ids, keep="last")
    out = newest.drop(columns=[source.known_at])
    if source.prediction_time != PREDICTION_TIME:
        out = out.drop(columns=[PREDICTION_TIME], errors="ignore").rename(columns={source.prediction_time: PREDICTION_TIME})
    out[PREDICTION_TIME] = pd.to_datetime(out[PREDICTION_TIME], utc=True)
    return out.reset_index(drop=True)


def labelled_events(source: LabelSource, *, cutoff: datetime, start: datetime | None = None,
                    end: datetime | None = None, columns: Sequence[str] = (),
                    fc: FeatureClient | None = None) -> pd.DataFrame:
    """The events predicted in ``[start, end]`` (UTC, either open) whose label was known by
    ``cutoff``: the row ids, ``columns`` (join keys, request columns), ``event_timestamp`` and
    the label; oldest first. From the ``entities`` table joined on the row ids where the source
    names one, else from the label table's own rows."""
    labels = known_labels(source, cutoff=cutoff, fc=fc)
    when = labels[PREDICTION_TIME]
    keep = pd.Series(True, index=labels.index)
    if start is not None:
        keep &= when >= utc_timestamp(start)
    if end is not None:
        keep &= when <= utc_timestamp(end)
    labels = labels[keep]
    ids = list(source.join_keys)
    if source.entities:
        wanted = list(dict.fromkeys([*ids, *columns]))
        at = ds.field(source.entity_time)
        window = [at >= utc_timestamp(start).to_pydatetime()] if start is not None else []
        window += [at <= utc_timestamp(end).to_pydatetime()] if end is not None else []
        where = None
        for part in window:
            where = part if where is None else where & part
        events = read_table(source.entities, columns=list(dict.fromkeys([*wanted, source.entity_time])),
                            where=where if Path(source.entities).exists() else None, fc=fc)
        events = events.rename(columns={source.entity_time: PREDICTION_TIME}).drop_duplicates(ids)
        events[PREDICTION_TIME] = pd.to_datetime(events[PREDICTION_TIME], utc=True)
        rows = events.merge(labels[[*ids, source.label]], on=ids, how="inner")
    else:
        missing = [c for c in columns if c not in labels.columns]
        if missing:
            extra = read_table(source.table, columns=list(dict.fromkeys([*ids, *missing])), fc=fc).drop_duplicates(ids)
            labels = labels.merge(extra, on=ids, how="left")
        rows = labels
    return rows.sort_values(PREDICTION_TIME, kind="stable").reset_index(drop=True)
