"""Entity frame checks: which timestamp values are accepted, and how they become UTC."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta, timezone

import numpy as np
import pandas as pd
import pytest

from features.entity_frame import check_pandas
from features.errors import TimestampTypeError

PARIS_WINTER = timezone(timedelta(hours=1))
TOKYO = timezone(timedelta(hours=9))


def test_object_column_of_mixed_zones_and_naive_datetimes_becomes_utc():
    # Feast's own test data build entity frames like this: datetime objects in several zones.
    stamps = [datetime(2026, 1, 10, 12, 0, tzinfo=PARIS_WINTER),   # 11:00 UTC
              datetime(2026, 1, 10, 12, 0),                         # naive: 12:00 UTC, as in Feast
              pd.Timestamp("2026-01-10 21:30", tz="Asia/Tokyo"),    # 12:30 UTC
              datetime(2026, 1, 11, 0, 15, tzinfo=TOKYO),           # 15:15 UTC the day before
              np.datetime64("2026-01-10T13:00:00"),                 # naive numpy: 13:00 UTC
              None]
    frame = check_pandas(pd.DataFrame({"id": range(6), "event_timestamp": pd.Series(stamps, dtype=object)}),
                         ["id"])
    got = frame.original["event_timestamp"]
    assert str(got.dtype).endswith("UTC]")
    assert got.iloc[:5].tolist() == [pd.Timestamp(t, tz="UTC") for t in (
        "2026-01-10 11:00", "2026-01-10 12:00", "2026-01-10 12:30", "2026-01-10 15:15", "2026-01-10 13:00")]
    assert pd.isna(got.iloc[5])
    assert frame.min_t == datetime(2026, 1, 10, 11, 0, tzinfo=UTC)
    assert frame.max_t == datetime(2026, 1, 10, 15, 15, tzinfo=UTC)


def test_object_column_keeps_the_frames_index_and_other_columns():
    entity_df = pd.DataFrame({"id": [3, 4], "event_timestamp": pd.Series(
        [datetime(2026, 1, 1, tzinfo=UTC), datetime(2026, 1, 2, tzinfo=TOKYO)], dtype=object, index=[10, 20])},
        index=[10, 20])
    frame = check_pandas(entity_df, ["id"])
    assert frame.original["id"].tolist() == [3, 4]
    assert frame.original["event_timestamp"].tolist() == [pd.Timestamp("2026-01-01", tz="UTC"),
                                                          pd.Timestamp("2026-01-01 15:00", tz="UTC")]
    assert entity_df["event_timestamp"].dtype == object  # the caller's frame is left alone


@pytest.mark.parametrize("values", [["2026-01-10", "2026-01-11"],
                                    [datetime(2026, 1, 10, tzinfo=UTC), "2026-01-11"],
                                    [1_700_000_000, 1_700_000_001]])
def test_text_and_numbers_are_refused_with_the_conversion_to_make(values):
    entity_df = pd.DataFrame({"id": [1, 2], "event_timestamp": pd.Series(values, dtype=object)})
    with pytest.raises(TimestampTypeError, match=r"pd\.to_datetime\(df\['event_timestamp'\], utc=True\)"):
        check_pandas(entity_df, ["id"])


def test_datetime64_columns_are_still_read_as_before():
    naive = pd.DataFrame({"id": [1], "event_timestamp": pd.to_datetime(["2026-01-10 12:00"])})
    aware = pd.DataFrame({"id": [1], "event_timestamp": pd.to_datetime(["2026-01-10 13:00+01:00"])})
    for entity_df in (naive, aware):
        got = check_pandas(entity_df, ["id"]).original["event_timestamp"]
        assert got.tolist() == [pd.Timestamp("2026-01-10 12:00", tz="UTC")]
