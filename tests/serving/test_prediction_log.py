"""The prediction log (serving/prediction_log.py) on real files: round trips, hourly partitions,
microsecond timestamps, nothing lost on close, a non-blocking append, the memory bound when the disk
fails, schema changes, readers that never see half a file, and a clean interpreter exit."""

from __future__ import annotations

import logging
import os
import subprocess
import sys
import threading
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
import pyarrow as pa
import pyarrow.dataset as ds
import pyarrow.parquet as pq
import pytest

from serving import prediction_log
from serving.prediction_log import PredictionLog, PredictionLogError, PredictionLogWriteError

T0 = np.datetime64("2026-11-21T10:59:59.000000", "us")
US = np.timedelta64(1, "us")
PARTITIONS = ds.partitioning(pa.schema([("date", pa.string()), ("hour", pa.int32())]), flavor="hive")


def scored(n: int, *, start: int = 0, at: np.datetime64 = T0, step: np.timedelta64 = US, **extra: Any) -> dict[str, Any]:
    """n scored rows with ids start…start+n-1, one every ``step`` from ``at``; ``extra`` adds columns."""
    ids = np.arange(start, start + n)
    amount = ids * 1.5
    amount[ids % 5 == 0] = np.nan
    return {
        "event_timestamp": at + ids * step,
        "request_id": np.array([f"req-{i}" for i in ids], dtype=object),
        "customer_id": ids.astype(np.int64),
        "merchant_id": (ids % 7).astype(np.int64),
        "amount": amount,
        "channel": np.array([None if i % 3 == 0 else ("web", "app")[i % 2] for i in ids], dtype=object),
        "score": (ids % 1_000) / 1_000.0,
        "variant": np.full(n, "champion", dtype=object),
        "model_version": np.full(n, "3", dtype=object),
        **extra,
    }


def data_files(root: Path) -> list[Path]:
    return sorted(p for p in root.rglob("*.parquet") if not p.name.startswith("."))


def read_log(root: Path) -> pa.Table:
    """Every row, with the union of the files' columns and the ``date``/``hour`` partition keys."""
    schema = pa.unify_schemas([*(pq.read_schema(f) for f in data_files(root)), PARTITIONS.schema])
    return ds.dataset(root, partitioning=PARTITIONS, schema=schema).to_table().sort_by("customer_id")


def wait_until(condition: Callable[[], bool], timeout_s: float = 5.0) -> bool:
    deadline = time.monotonic() + timeout_s
    while not condition():
        if time.monotonic() > deadline:
            return False
        time.sleep(0.01)
    return True


def test_rows_round_trip(tmp_path: Path) -> None:
    batches = [scored(40), scored(1, start=40), scored(59, start=41)]
    with PredictionLog(tmp_path, flush_interval_s=60) as plog:
        for batch in batches:
            plog.append(batch)
    back = read_log(tmp_path)
    assert back.num_rows == 100
    assert (plog.written_rows, plog.pending_rows, plog.dropped_rows, plog.files_written) == (100, 0, 0, 1)
    expected = scored(100)
    np.testing.assert_array_equal(back["event_timestamp"].to_numpy().astype("datetime64[us]"),
                                  expected["event_timestamp"])
    for name in ("customer_id", "merchant_id", "score"):
        np.testing.assert_array_equal(back[name].to_numpy(), expected[name])
    np.testing.assert_array_equal(back["amount"].to_numpy(), expected["amount"])  # NaN where NaN
    assert back["amount"].null_count == 0
    for name in ("request_id", "channel", "variant", "model_version"):
        assert back[name].to_pylist() == expected[name].tolist()
    assert set(back["date"].to_pylist()) == {"2026-11-21"} and set(back["hour"].to_pylist()) == {10}


def test_partitioned_by_utc_event_hour_across_hour_and_day_boundaries(tmp_path: Path) -> None:
    stamps = np.array(["2026-11-21T10:59:59.999999", "2026-11-21T11:00:00.000000", "2026-11-21T23:59:59.999999",
                       "2026-11-22T00:00:00.000000", "2026-11-21T10:00:00.000000"], dtype="datetime64[us]")
    with PredictionLog(tmp_path) as plog:
        plog.append(scored(5) | {"event_timestamp": stamps})
    folders = sorted(str(f.parent.relative_to(tmp_path)) for f in data_files(tmp_path))
    assert folders == ["date=2026-11-21/hour=10", "date=2026-11-21/hour=11",
                       "date=2026-11-21/hour=23", "date=2026-11-22/hour=00"]
    back = read_log(tmp_path)
    for ts, day, hour in zip(back["event_timestamp"].to_pylist(), back["date"].to_pylist(),
                             back["hour"].to_pylist(), strict=True):
        assert (ts.strftime("%Y-%m-%d"), ts.hour) == (day, hour)
    assert sorted(back["customer_id"].to_pylist()) == [0, 1, 2, 3, 4]


def test_timestamps_are_stored_as_utc_microseconds(tmp_path: Path) -> None:
    nanos = np.array(["2026-11-21T10:15:00.123456789"], dtype="datetime64[ns]")
    with PredictionLog(tmp_path) as plog:
        plog.append(scored(1) | {"event_timestamp": nanos})
    (path,) = data_files(tmp_path)
    parquet_schema = pq.ParquetFile(path).schema
    column = parquet_schema.column(parquet_schema.names.index("event_timestamp"))
    assert column.physical_type == "INT64"
    assert "timeUnit=microseconds" in str(column.logical_type) and "isAdjustedToUTC=true" in str(column.logical_type)
    assert pq.read_schema(path).field("event_timestamp").type == pa.timestamp("us", tz="UTC")
    stored = pq.read_table(path)["event_timestamp"].cast(pa.int64()).to_pylist()
    assert stored == [nanos.astype("datetime64[us]").astype(np.int64)[0]]  # truncated to the microsecond


def test_nothing_lost_on_close_with_concurrent_appends(tmp_path: Path) -> None:
    threads, appends = 6, 300
    plog = PredictionLog(tmp_path, max_rows=200, flush_interval_s=0.02)

    def worker(k: int) -> None:
        for j in range(appends):
            start = (k * appends + j) * 3
            plog.append(scored(1 + j % 3, start=start))

    pool = [threading.Thread(target=worker, args=(k,)) for k in range(threads)]
    for t in pool:
        t.start()
    for t in pool:
        t.join()
    plog.close()
    expected = sorted((k * appends + j) * 3 + r for k in range(threads) for j in range(appends) for r in range(1 + j % 3))
    back = read_log(tmp_path)
    assert back["customer_id"].to_pylist() == expected  # every row, once
    assert plog.written_rows == len(expected) and plog.dropped_rows == 0 and plog.pending_rows == 0
    assert plog.files_written > 1


def test_append_never_blocks_for_long(tmp_path: Path) -> None:
    one_row = scored(1)
    with PredictionLog(tmp_path, max_rows=1_000, flush_interval_s=0.05) as plog:
        slowest = 0.0
        began = time.perf_counter()
        for _ in range(10_000):
            t = time.perf_counter()
            plog.append(one_row)
            slowest = max(slowest, time.perf_counter() - t)
        elapsed = time.perf_counter() - began
    assert elapsed < 1.0, f"10k appends took {elapsed:.2f} s"
    assert slowest < 0.2, f"the slowest append took {slowest * 1e3:.0f} ms"
    assert plog.written_rows == 10_000 and plog.files_written >= 2


def test_a_write_starts_once_max_rows_are_queued(tmp_path: Path) -> None:
    with PredictionLog(tmp_path, max_rows=100, flush_interval_s=3_600) as plog:
        for k in range(5):
            plog.append(scored(50, start=50 * k))
        assert wait_until(lambda: plog.written_rows >= 200), plog.written_rows


def test_queued_rows_are_written_within_the_flush_interval(tmp_path: Path) -> None:
    with PredictionLog(tmp_path, flush_interval_s=0.05) as plog:
        plog.append(scored(3))
        assert wait_until(lambda: plog.written_rows == 3, timeout_s=2.0)
        assert plog.pending_rows == 0


def test_failing_disk_keeps_memory_bounded_then_recovers(tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    root = tmp_path / "log"
    root.write_text("not a folder")  # every write fails, whoever runs the test (root ignores chmod)
    caplog.set_level(logging.WARNING, logger="serving.prediction_log")
    with PredictionLog(root, max_rows=20, flush_interval_s=0.02, max_pending_rows=100) as plog:
        for k in range(50):
            plog.append(scored(10, start=10 * k))
            assert plog.pending_rows <= 100
        with pytest.raises(PredictionLogWriteError, match="kept in memory"):
            plog.flush()
        assert plog.pending_rows == 100 and plog.dropped_rows == 400 and plog.written_rows == 0
        assert plog.write_errors >= 1
        drops = [r for r in caplog.records if r.levelno == logging.WARNING and "dropped" in r.getMessage()]
        assert len(drops) == 1  # rate-limited: one warning for 40 dropped batches
        root.unlink()  # the cause is fixed: the kept rows are written, once
        plog.flush()
    assert read_log(root)["customer_id"].to_pylist() == list(range(100))
    assert (plog.written_rows, plog.dropped_rows, plog.pending_rows) == (100, 400, 0)


def test_read_only_root_is_retried_after_permissions_are_fixed(tmp_path: Path) -> None:
    root = tmp_path / "log"
    root.mkdir()
    root.chmod(0o500)
    try:
        try:
            (root / "probe").write_text("")
            pytest.skip("chmod does not stop this user from writing (running as root)")
        except PermissionError:
            pass
        with PredictionLog(root, flush_interval_s=0.02, max_pending_rows=30) as plog:
            plog.append(scored(20))
            plog.append(scored(20, start=20))  # over the bound: dropped
            with pytest.raises(PredictionLogWriteError, match="Permission denied"):
                plog.flush()
            assert (plog.pending_rows, plog.dropped_rows) == (20, 20)
            root.chmod(0o700)
            plog.flush()
        assert read_log(root)["customer_id"].to_pylist() == list(range(20))
    finally:
        root.chmod(0o700)


def test_a_tiny_pending_bound_drops_whole_batches(tmp_path: Path) -> None:
    with PredictionLog(tmp_path, flush_interval_s=3_600, max_pending_rows=5) as plog:
        plog.append(scored(10))  # larger than the bound on its own
        plog.append(scored(3, start=10))
        plog.append(scored(3, start=13))  # 3 + 3 > 5
        assert (plog.pending_rows, plog.dropped_rows) == (3, 13)
    assert read_log(tmp_path)["customer_id"].to_pylist() == [10, 11, 12]


def test_changed_columns_in_one_write_are_unified_with_nulls(tmp_path: Path) -> None:
    old = scored(3, amt_7d=np.array([1.0, np.nan, 3.0]))
    new = scored(2, start=3, amt_30d=np.array([30.0, 31.0]), country=np.array(["DE", "FR"], dtype=object))
    del new["channel"]
    with PredictionLog(tmp_path, flush_interval_s=3_600) as plog:
        plog.append(old)
        plog.append(new)
    (path,) = data_files(tmp_path)
    back = pq.read_table(path).sort_by("customer_id")
    assert back["amt_7d"].to_pylist()[:1] == [1.0] and back["amt_7d"].to_pylist()[3:] == [None, None]
    assert back["amt_30d"].to_pylist() == [None, None, None, 30.0, 31.0]
    assert back["country"].to_pylist() == [None, None, None, "DE", "FR"]
    assert back["channel"].to_pylist() == [None, "app", "web", None, None]


def test_changed_columns_across_writes_and_conflicting_types(tmp_path: Path) -> None:
    with PredictionLog(tmp_path, flush_interval_s=3_600) as plog:
        plog.append(scored(2, amt_7d=np.array([1.0, 2.0])))
        plog.flush()
        plog.append(scored(2, start=2, amt_30d=np.array([3.0, 4.0])))
        plog.flush()
        # 'segment' as a float, then as a string, in one write: two files, nothing lost
        plog.append(scored(1, start=4, segment=np.array([0.5])))
        plog.append(scored(1, start=5, segment=np.array(["gold"], dtype=object)))
    assert plog.files_written == 4 and plog.written_rows == 6
    segments = {pq.read_schema(f).field("segment").type for f in data_files(tmp_path) if "segment" in pq.read_schema(f).names}
    assert segments == {pa.float64(), pa.string()}
    files = [f for f in data_files(tmp_path) if "segment" not in pq.read_schema(f).names]
    back = read_log_files(files)
    assert back["customer_id"].to_pylist() == [0, 1, 2, 3]
    assert back["amt_7d"].to_pylist() == [1.0, 2.0, None, None] and back["amt_30d"].to_pylist() == [None, None, 3.0, 4.0]


def read_log_files(files: list[Path]) -> pa.Table:
    schema = pa.unify_schemas([pq.read_schema(f) for f in files])
    return ds.dataset([str(f) for f in files], schema=schema).to_table().sort_by("customer_id")


def test_a_batch_arrow_cannot_convert_is_dropped_and_the_others_written(tmp_path: Path) -> None:
    with PredictionLog(tmp_path, flush_interval_s=3_600) as plog:
        plog.append(scored(2))
        plog.append(scored(2, start=2) | {"channel": np.array(["web", 7], dtype=object)})
        plog.append(scored(2, start=4))
    assert read_log(tmp_path)["customer_id"].to_pylist() == [0, 1, 4, 5]
    assert (plog.written_rows, plog.dropped_rows) == (4, 2)
    assert plog.dropped_by_reason["unconvertible"] == 2


def request_rows(n: int, start: int) -> tuple[int, dict[str, Any]]:
    """One request of ``n`` rows as the scorer hands it to append_rows: its instant (µs), its columns."""
    batch = scored(n, start=start, at=T0 + start * 1_000 * US, step=np.timedelta64(0, "us"))
    at_us = int(batch.pop("event_timestamp")[0].astype(np.int64))
    batch["variant"] = batch["variant"].tolist()  # the scorer's lists, as they come
    batch["request_id"] = [f"req-{start}"] * n
    return at_us, batch


ID_TYPES = {"customer_id": pa.int64()}


def test_append_rows_writes_what_append_writes(tmp_path: Path) -> None:
    """Requests of 1 to 100 rows (one-row ones gathered as lists, those over LIST_ROWS kept as
    arrays), in any order: the same rows, values, nulls and types as the same rows given to append(),
    except that numbers other than the declared ids are float64."""
    rng = np.random.default_rng(7)
    sizes = [int(k) for k in rng.choice([1, 1, 1, 2, 5, prediction_log.LIST_ROWS, prediction_log.LIST_ROWS + 1, 100],
                                        size=60)]
    starts = np.cumsum([0, *sizes[:-1]])
    with (PredictionLog(tmp_path / "rows", flush_interval_s=3_600) as rows,
          PredictionLog(tmp_path / "batches", flush_interval_s=3_600, column_types=ID_TYPES) as batches):
        for n, start in zip(sizes, starts, strict=True):
            at_us, columns = request_rows(n, int(start))
            rows.append_rows("fraud", at_us, columns, ID_TYPES)
            batch = {k: np.asarray(v, dtype=object) if isinstance(v, list) else v for k, v in columns.items()}
            batch["merchant_id"] = batch["merchant_id"].astype(np.float64)
            batches.append({"event_timestamp": np.full(n, at_us, dtype="datetime64[us]"), **batch})
        assert rows.pending_rows == sum(sizes)
    got, want = read_log(tmp_path / "rows"), read_log(tmp_path / "batches")
    assert got.num_rows == sum(sizes) and len(data_files(tmp_path / "rows")) == len(data_files(tmp_path / "batches"))
    assert got.schema == want.schema
    assert got.to_pandas().equals(want.to_pandas())  # NaN equal to NaN (Arrow's equals says no)
    assert got["amount"].null_count == 0 and np.isnan(got["amount"].to_numpy()).sum() == (sum(sizes) + 4) // 5
    assert got.schema.field("merchant_id").type == pa.float64() and got.schema.field("customer_id").type == pa.int64()
    assert got["channel"].null_count == sum(1 for i in range(sum(sizes)) if i % 3 == 0)


def test_append_rows_drops_only_the_request_arrow_cannot_convert(tmp_path: Path) -> None:
    """Text in a column where the layout's first request had a number goes to a file of its own,
    as append() does with conflicting types; text that is not Unicode loses its request alone."""
    with PredictionLog(tmp_path, flush_interval_s=3_600) as plog:
        for start in range(0, 12, 2):
            at_us, columns = request_rows(2, start)
            if start == 4:    # text where the layout's first request had a number
                columns["amount"] = np.array(["12.5", "x"], dtype=object)
            if start == 8:    # text that is not Unicode
                columns["channel"] = np.array(["web", "\ud800"], dtype=object)
            plog.append_rows("fraud", at_us, columns)
    files = [pq.read_table(f) for f in data_files(tmp_path)]
    assert sorted(i for t in files for i in t["customer_id"].to_pylist()) == [0, 1, 2, 3, 4, 5, 6, 7, 10, 11]
    assert [t["amount"].to_pylist() for t in files if t.schema.field("amount").type == pa.string()] == [["12.5", "x"]]
    assert (plog.written_rows, plog.dropped_by_reason["unconvertible"]) == (10, 2)


def test_append_rows_keeps_each_layout_and_converts_on_the_writer_thread(tmp_path: Path,
                                                                         monkeypatch: pytest.MonkeyPatch) -> None:
    threads: list[str] = []
    tables = prediction_log.RowColumns.tables

    def recorded(self: Any) -> Any:
        threads.append(threading.current_thread().name)
        return tables(self)

    monkeypatch.setattr(prediction_log.RowColumns, "tables", recorded)
    with PredictionLog(tmp_path, flush_interval_s=3_600) as plog:
        plog.append_rows("a", *request_rows(1, 0))
        at_us, columns = request_rows(1, 1)
        plog.append_rows("a", at_us, columns | {"new_feature": np.array([4.5])})  # same key, another layout
        plog.append_rows("a", *request_rows(1, 2))
        plog.append_rows("b", *request_rows(3, 3))
        assert threads == [] and plog.pending_rows == 6
    back = read_log(tmp_path)
    assert back["customer_id"].to_pylist() == list(range(6))
    assert back["new_feature"].to_pylist() == [None, 4.5, None, None, None, None]
    assert threads == ["prediction-log-writer"] * 4


@pytest.mark.parametrize(("columns", "message"), [
    ({"a": np.zeros(2), "b": [1.0]}, "differ in length"),
    ({"a": np.zeros((1, 2))}, "one-dimensional"),
    ({"a": np.zeros(1), "event_timestamp": np.zeros(1)}, "the log's own"),
    ({"a": np.zeros(1), "hour": np.zeros(1)}, "the log's own"),
])
def test_append_rows_refuses_malformed_requests(tmp_path: Path, columns: dict[str, Any], message: str) -> None:
    with PredictionLog(tmp_path, flush_interval_s=3_600) as plog:
        with pytest.raises(PredictionLogError, match=message):
            plog.append_rows("a", 0, columns)
        assert plog.pending_rows == 0


def test_text_that_is_not_unicode_loses_its_own_batch_only(tmp_path: Path) -> None:
    """Issue 15: a lone surrogate in one request's text made Arrow raise UnicodeEncodeError, which
    the writer did not expect, and the whole round (every client's rows) was dropped."""
    with PredictionLog(tmp_path, flush_interval_s=3_600) as plog:
        for start in range(0, 300, 3):
            plog.append(scored(3, start=start))
            if start == 150:
                plog.append(scored(2, start=1_000) | {"channel": np.array(["\ud800", "web"], dtype=object)})
    assert read_log(tmp_path)["customer_id"].to_pylist() == list(range(300))
    assert plog.written_rows == 300 and plog.dropped_by_reason["unconvertible"] == 2


def test_rows_parquet_refuses_are_isolated_down_to_the_row(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """A data error in the Parquet write (not the disk) loses only the rows it is about: the writer
    halves the table until it finds them. The real writer runs; the refusal is injected."""
    from serving import prediction_log, prediction_log_files

    real = prediction_log_files._write_file

    def refuse_customer_7(folder: Path, table: pa.Table) -> None:
        if 7 in table.column("customer_id").to_pylist():
            raise ValueError("Parquet refused a value")
        real(folder, table)

    monkeypatch.setattr(prediction_log_files, "_write_file", refuse_customer_7)
    with PredictionLog(tmp_path, flush_interval_s=3_600) as plog:
        plog.append(scored(20))
    assert read_log(tmp_path)["customer_id"].to_pylist() == [i for i in range(20) if i != 7]
    assert plog.dropped_by_reason == {**dict.fromkeys(prediction_log.DROP_REASONS, 0), "unwritable": 1}


@pytest.mark.parametrize(
    ("change", "message"),
    [
        ({"event_timestamp": None}, "needs a 'event_timestamp' column"),
        ({"event_timestamp": np.arange(3, dtype=np.int64)}, "must be numpy datetime64"),
        ({"event_timestamp": np.array([T0, np.datetime64("NaT"), T0])}, "NaT"),
        ({"score": np.zeros(2)}, "differ in length"),
        ({"hour": np.zeros(3)}, "clashes with the log's partition"),
        ({"features": np.zeros((3, 2))}, "one-dimensional"),
    ],
)
def test_malformed_batches_are_refused(tmp_path: Path, change: dict[str, Any], message: str) -> None:
    batch = scored(3) | change
    batch = {k: v for k, v in batch.items() if v is not None}
    with PredictionLog(tmp_path) as plog:
        with pytest.raises(PredictionLogError, match=message):
            plog.append(batch)
        assert plog.pending_rows == 0


def test_close_is_idempotent_and_later_appends_are_dropped(tmp_path: Path) -> None:
    plog = PredictionLog(tmp_path, flush_interval_s=3_600)
    plog.append(scored(4, step=np.timedelta64(1, "h")))
    plog.close()
    plog.close()
    plog.flush()  # a no-op once closed
    plog.append(scored(2, start=4))
    assert (plog.written_rows, plog.dropped_rows, plog.files_written) == (4, 2, 4)
    assert not plog._thread.is_alive()


def test_a_reader_never_sees_a_partial_file(tmp_path: Path) -> None:
    batch_rows = 2_000
    plog = PredictionLog(tmp_path, flush_interval_s=0.005)
    stop = threading.Event()

    def write() -> None:
        k = 0
        while not stop.is_set():
            plog.append(scored(batch_rows, start=k * batch_rows))
            k += 1
            time.sleep(0.002)

    writer = threading.Thread(target=write)
    writer.start()
    counts = []
    try:
        deadline = time.monotonic() + 1.5
        while time.monotonic() < deadline:
            counts.append(ds.dataset(tmp_path, partitioning="hive").count_rows())  # opens every footer
    finally:
        stop.set()
        writer.join()
        plog.close()
    assert len(counts) > 5 and counts[-1] > 0
    assert counts == sorted(counts) and all(c % batch_rows == 0 for c in counts)
    assert ds.dataset(tmp_path, partitioning="hive").count_rows() == plog.written_rows


def test_a_clean_interpreter_exit_writes_everything(tmp_path: Path) -> None:
    script = (
        "import sys, numpy as np\n"
        "from pathlib import Path\n"
        "from serving.prediction_log import PredictionLog\n"
        "log = PredictionLog(Path(sys.argv[1]), flush_interval_s=3600)\n"
        "for k in range(100):\n"
        "    log.append({'event_timestamp': np.full(10, np.datetime64('2026-11-21T10:00', 'us')),\n"
        "                'customer_id': np.arange(10 * k, 10 * k + 10)})\n"
        # no close(): the atexit hook must write the rows
    )
    env = {**os.environ, "PYTHONPATH": str(Path(__file__).resolve().parents[2])}
    subprocess.run([sys.executable, "-c", script, str(tmp_path)], check=True, env=env, timeout=60)
    assert read_log(tmp_path)["customer_id"].to_pylist() == list(range(1_000))


def test_a_declared_column_type_holds_in_a_batch_of_nulls(tmp_path: Path) -> None:
    """An optional id that no row of a whole write carries is still int64 in that file, so every
    file of the log reads with one schema (Spark's mergeSchema refuses null against int64)."""
    with PredictionLog(tmp_path, column_types={"transaction_id": pa.int64()}) as log:
        log.append(scored(3, transaction_id=np.array([None, None, None], dtype=object)))
        log.flush()
        log.append(scored(2, start=3, transaction_id=np.array([11, None], dtype=object)))
    files = data_files(tmp_path)
    assert len(files) == 2
    assert {pq.read_schema(f).field("transaction_id").type for f in files} == {pa.int64()}
    assert read_log(tmp_path).column("transaction_id").to_pylist() == [None, None, None, 11, None]
