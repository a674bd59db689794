"""A model's labels as known at a moment: the newest known label wins, a later one is unseen."""

from __future__ import annotations

from datetime import UTC, datetime
from pathlib import Path

import pandas as pd
import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from pipelines.errors import TrainingError
from pipelines.labels import known_labels, labelled_events, read_table
from serving.model_contract import LabelSource


def _at(day: int, hour: int = 0) -> datetime:
    return datetime(2026, 11, day, hour, tzinfo=UTC)


def _write(path: Path, frame: pd.DataFrame) -> str:
    path.mkdir(parents=True)
    pq.write_table(pa.Table.from_pandas(frame, preserve_index=False), path / "part-0.parquet", coerce_timestamps="us")
    return str(path)


@pytest.fixture
def source(tmp_path: Path) -> LabelSource:
    labels = pd.DataFrame({  # payment 2 first labelled legitimate, then a chargeback on day 9
        "payment_id": [1, 2, 2, 3], "fraud": [0, 0, 1, 1],
        "paid_at": [_at(1), _at(2), _at(2), _at(3)], "known_at": [_at(4), _at(5), _at(9), _at(12)]})
    events = pd.DataFrame({"payment_id": [1, 2, 3, 4], "card": [10, 20, 30, 40], "amount": [5.0, 6.0, 7.0, 8.0],
                           "event_timestamp": [_at(1), _at(2), _at(3), _at(4)]})
    return LabelSource(_write(tmp_path / "labels", labels), "fraud", ("payment_id",), "paid_at", "known_at",
                       entities=_write(tmp_path / "events", events))


def test_the_newest_label_known_by_the_cutoff_wins(source: LabelSource) -> None:
    before = known_labels(source, cutoff=_at(8)).set_index("payment_id")["fraud"].to_dict()
    after = known_labels(source, cutoff=_at(10)).set_index("payment_id")["fraud"].to_dict()
    assert before == {1: 0, 2: 0} and after == {1: 0, 2: 1}  # payment 3's label is not known yet
    frame = known_labels(source, cutoff=_at(10))
    assert list(frame.columns) == ["payment_id", "fraud", "event_timestamp"]  # the prediction time, renamed
    assert str(frame["event_timestamp"].dt.tz) == "UTC"


def test_labelled_events_come_from_the_events_table_in_the_window(source: LabelSource) -> None:
    rows = labelled_events(source, cutoff=_at(12), start=_at(2), end=_at(3), columns=["card", "amount"])
    assert rows[["payment_id", "card", "amount", "fraud"]].values.tolist() == [[2, 20, 6.0, 1], [3, 30, 7.0, 1]]
    assert rows["event_timestamp"].tolist() == [pd.Timestamp(_at(2)), pd.Timestamp(_at(3))]
    unlabelled = labelled_events(source, cutoff=_at(12), columns=["card"])
    assert 4 not in set(unlabelled["payment_id"])  # an event without a known label is not a labelled row


def test_without_an_events_table_the_label_rows_are_the_events(tmp_path: Path, source: LabelSource) -> None:
    from dataclasses import replace

    alone = replace(source, entities="")
    rows = labelled_events(alone, cutoff=_at(12))
    assert rows["payment_id"].tolist() == [1, 2, 3] and rows["fraud"].tolist() == [0, 1, 1]
    with pytest.raises(TrainingError, match="has no columns \\['card'\\]"):
        labelled_events(alone, cutoff=_at(12), columns=["card"])
    with pytest.raises(TrainingError, match="does not exist"):
        known_labels(replace(source, table=str(tmp_path / "nowhere/labels")), cutoff=_at(12))


def test_a_label_table_url_is_never_quoted_with_its_secret() -> None:
    with pytest.raises(TrainingError, match="does not exist") as raised:
        read_table("s3a://reader:hunter2@labels.example/fraud/labels")
    assert "hunter2" not in str(raised.value) and "reader:***@labels.example" in str(raised.value)
