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
