"""Atomic partition replacement: what readers see after every possible crash point."""

from __future__ import annotations

import shutil
from collections.abc import Callable
from pathlib import Path

import pandas as pd
import pyarrow.parquet as pq
import pytest

from features.errors import PartitionCommitError
from features.partitioned_write import LOCK_FILE, recover, write_partitions

pytestmark = pytest.mark.integration  # starts a real local Spark

D1, D2, D3, D4 = "2026-03-01", "2026-03-02", "2026-03-03", "2026-03-04"
OLD = {D1: 2, D2: 3, D3: 1}
# The second write lists D2 (replaced), D3 (no rows: removed) and D4 (added); D1 is not listed.
NEW = {D2: 2, D4: 4}
NEW_LIST = [D2, D3, D4]
EXPECTED_NEW = {D1: ("old", 2), D2: ("new", 2), D4: ("new", 4)}
EXPECTED_OLD = {d: ("old", n) for d, n in OLD.items()}


class Crash(Exception):
    """Stands in for the process dying right after a step."""


def _frame(spark, tag: str, counts: dict[str, int]):
    rows = [(tag, day, i, (pd.Timestamp(day, tz="UTC") + pd.Timedelta(microseconds=i + 1)).to_pydatetime())
            for day, n in counts.items() for i in range(n)]  # fmt: skip
    return spark.createDataFrame(rows, "tag string, date string, i long, ts timestamp")


def _partitions(table: Path) -> dict[str, tuple[str, int]]:
    """What a reader sees: per visible partition, its single tag and its row count."""
    seen = {}
    for part in sorted(table.glob("date=*")):
        tags = pq.read_table(part).column("tag").to_pylist()
        assert len(set(tags)) == 1, f"{part.name} mixes files of two writes: {sorted(set(tags))}"
        seen[part.name[len("date=") :]] = (tags[0], len(tags))
    return seen


def _hidden_leftovers(table: Path) -> list[str]:
    return sorted(p.name for p in table.iterdir() if p.name.startswith("_") and p.name != LOCK_FILE)


def _crash_at(step: str) -> Callable[[str], None]:
    def hook(seen: str) -> None:
        if seen == step:
            raise Crash(step)

    return hook


@pytest.fixture(scope="module")
def old_table(spark, tmp_path_factory) -> Path:
    table = tmp_path_factory.mktemp("old") / "t"
    write_partitions(_frame(spark, "old", OLD), table, list(OLD))
    return table


def _copy(table: Path, tmp_path: Path) -> Path:
    return Path(shutil.copytree(table, tmp_path / "t"))


def test_replaces_exactly_the_listed_partitions(spark, old_table, tmp_path):
    table = _copy(old_table, tmp_path)
    result = write_partitions(_frame(spark, "new", NEW), table, NEW_LIST, sort_by=["i"])
    assert result.rows == NEW and result.removed == (D3,) and result.total_rows == 6
    assert _partitions(table) == EXPECTED_NEW
    assert _hidden_leftovers(table) == []
    assert [len(list((table / f"date={d}").glob("*.parquet"))) for d in (D2, D4)] == [1, 1]


def test_an_empty_result_removes_every_listed_partition(spark, old_table, tmp_path):
    table = _copy(old_table, tmp_path)
    result = write_partitions(_frame(spark, "new", {}), table, [D1, D3, D4])
    assert result.rows == {} and result.removed == (D1, D3, D4)
    assert _partitions(table) == {D2: EXPECTED_OLD[D2]} and _hidden_leftovers(table) == []


def test_timestamps_are_utc_micros_and_spark_skips_staging(spark, old_table, tmp_path):
    table = _copy(old_table, tmp_path)
    with pytest.raises(Crash):
        write_partitions(_frame(spark, "new", NEW), table, NEW_LIST, hook=_crash_at("staged"))
    assert _hidden_leftovers(table), "the crashed run should have left its staging folder"
    (part,) = (table / f"date={D1}").glob("*.parquet")
    assert str(pq.read_schema(part).field("ts").type) == "timestamp[us, tz=UTC]"
    read = spark.read.parquet(str(table)).groupBy("tag", "date").count().toPandas()
    assert sorted(map(tuple, read.to_numpy().tolist())) == [("old", d, n) for d, n in OLD.items()]


def test_crash_after_every_step_keeps_partitions_whole_and_recovers(spark, old_table, tmp_path):
    steps: list[str] = []
    write_partitions(_frame(spark, "new", NEW), _copy(old_table, tmp_path / "probe"), NEW_LIST, hook=steps.append)
    assert steps == ["staged", "journaled", f"aside:{D2}", f"in:{D2}", f"aside:{D3}", f"in:{D4}", "committed"]
    for n, step in enumerate(steps):
        table = _copy(old_table, tmp_path / str(n))
        with pytest.raises(Crash):
            write_partitions(_frame(spark, "new", NEW), table, NEW_LIST, hook=_crash_at(step))
        # Before recovery every visible partition is whole: old or new (a listed one may be absent).
        visible = _partitions(table)
        assert all(visible[d] in (EXPECTED_OLD.get(d), EXPECTED_NEW.get(d)) for d in visible), (step, visible)
        assert visible[D1] == EXPECTED_OLD[D1]
        committed = step != "staged"
        if committed:
            # The recovery may die as well, at its first step: recovering again still finishes.
            with pytest.raises(Crash):
                recover(table, hook=_raise_always)
        assert len(recover(table)) == (1 if committed else 0), step
        assert _partitions(table) == (EXPECTED_NEW if committed else EXPECTED_OLD), step
        assert _hidden_leftovers(table) == [], step
        assert recover(table) == []


def _raise_always(step: str) -> None:
    raise Crash(step)


def test_next_write_recovers_an_interrupted_one(spark, old_table, tmp_path):
    table = _copy(old_table, tmp_path)
    with pytest.raises(Crash):
        write_partitions(_frame(spark, "new", NEW), table, NEW_LIST, hook=_crash_at(f"aside:{D2}"))
    assert D2 not in _partitions(table)  # moved aside, not yet replaced
    write_partitions(_frame(spark, "third", {D1: 1}), table, [D1])
    assert _partitions(table) == {**EXPECTED_NEW, D1: ("third", 1)}
    assert _hidden_leftovers(table) == []


def test_spark_failure_while_staging_leaves_old_data(spark, old_table, tmp_path):
    from pyspark.sql import functions as F

    table = _copy(old_table, tmp_path)
    failing = _frame(spark, "new", NEW).withColumn(
        "i", F.when(F.col("i") == 1, F.raise_error(F.lit("boom"))).otherwise(F.col("i"))
    )
    with pytest.raises(Exception, match="boom"):
        write_partitions(failing, table, NEW_LIST)
    assert _partitions(table) == EXPECTED_OLD
    assert recover(table) == [] and _hidden_leftovers(table) == []


def test_rows_outside_the_listed_dates_are_rejected(spark, old_table, tmp_path):
    table = _copy(old_table, tmp_path)
    with pytest.raises(PartitionCommitError, match=D4):
        write_partitions(_frame(spark, "new", NEW), table, [D2])
    assert _partitions(table) == EXPECTED_OLD and _hidden_leftovers(table) == []


def test_a_second_writer_is_refused_while_one_holds_the_table(spark, old_table, tmp_path):
    table = _copy(old_table, tmp_path)
    refused: list[str] = []

    def meddle(step: str) -> None:
        if step == "journaled":
            with pytest.raises(PartitionCommitError, match="another process"):
                recover(table)
            refused.append(step)

    write_partitions(_frame(spark, "new", NEW), table, NEW_LIST, hook=meddle)
    assert refused == ["journaled"] and _partitions(table) == EXPECTED_NEW


@pytest.mark.parametrize("bad", ["2026-3-01", "2026-02-30", "yesterday", "date=2026-03-01"])
def test_partition_dates_must_be_iso_dates(spark, tmp_path, bad):
    with pytest.raises(PartitionCommitError, match="not a date"):
        write_partitions(_frame(spark, "new", {}), tmp_path / "t", [bad])


def test_partition_column_must_be_a_string(spark, tmp_path):
    frame = spark.createDataFrame([(1,)], "date int")
    with pytest.raises(PartitionCommitError, match="string column 'date'"):
        write_partitions(frame, tmp_path / "t", [D1])
