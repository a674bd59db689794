"""``tidemark features stream``: event files landing in a folder, pushed by a real Spark Structured
Streaming job (file source, availableNow) into a real Redis; a restart on the same checkpoint reads
only new files, and a file that repeats an event id counts it once."""

from __future__ import annotations

import json
from pathlib import Path

import pandas as pd
import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from features.errors import DataNotFoundError, UnknownPushSourceError
from features.sdk import FeatureClient
from features.stream_job import run_stream
from pipelines.cli import main as tidemark
from tests.integration.redis_servers import RedisProc
from tests.integration.stream_project import FEATURES, MODEL, PUSH_SOURCE, VIEW, write_project
from tidemark.settings import Settings, SparkSettings

pytestmark = pytest.mark.integration


@pytest.fixture(scope="module")
def project(tmp_path_factory: pytest.TempPathFactory, spark, module_redis: RedisProc) -> Settings:
    home = tmp_path_factory.mktemp("stream-job-home")
    write_project(home / "repo", module_redis.url)
    settings = Settings(home=home, spark=SparkSettings(master="local[2]"), redis_url=module_redis.url,
                        feast_repo=home / "repo", model_name=MODEL)
    FeatureClient(settings).apply()
    return settings


def _land(folder: Path, name: str, events: list[tuple[int, int, float]]) -> None:
    """A Parquet file of (account, event id, amount) events that happened a minute ago."""
    when = pd.Timestamp.now(tz="UTC") - pd.Timedelta(minutes=1)
    frame = pd.DataFrame({"account_id": [a for a, _, _ in events], "event_id": [e for _, e, _ in events],
                          "amount": [v for _, _, v in events], "event_timestamp": when})
    folder.mkdir(parents=True, exist_ok=True)
    pq.write_table(pa.Table.from_pandas(frame, preserve_index=False), folder / f"{name}.parquet", coerce_timestamps="us")


def _windows(settings: Settings, accounts: list[int]) -> list[tuple[int, float]]:
    online = FeatureClient(settings).online_features([{"account_id": a} for a in accounts],
                                                     [*FEATURES, f"{VIEW}:amt_sum_1h"]).frame
    return [(int(c), float(s)) for c, s in zip(online["amt_count_1h"], online["amt_sum_1h"], strict=True)]


def test_landed_files_are_pushed_once_across_restarts(project: Settings, spark, tmp_path: Path) -> None:
    landing, checkpoint = tmp_path / "landing", tmp_path / "checkpoint"
    _land(landing, "a", [(1, 1, 10.0), (1, 2, 5.0), (2, 3, 1.0)])
    _land(landing, "b", [(2, 4, 2.0), (3, 5, 7.5)])
    pusher = FeatureClient(project).event_pusher()
    first = run_stream(spark, pusher, PUSH_SOURCE, landing, checkpoint, once=True, max_files_per_trigger=1)
    assert first.batches == 2 and first.rows == 5  # one file per micro-batch
    assert first.added == {VIEW: 5} and first.duplicates == {VIEW: 0}
    assert _windows(project, [1, 2, 3]) == [(2, 15.0), (2, 3.0), (1, 7.5)]

    _land(landing, "c", [(1, 2, 5.0), (3, 6, 0.5)])  # event 2 again (a producer's retry), and a new one
    again = run_stream(spark, pusher, PUSH_SOURCE, landing, checkpoint, once=True)
    assert again.rows == 2  # only the new file: the checkpoint says a and b were done
    assert again.added == {VIEW: 1} and again.duplicates == {VIEW: 1}
    assert _windows(project, [1, 2, 3]) == [(2, 15.0), (2, 3.0), (2, 8.0)]

    nothing_new = run_stream(spark, pusher, PUSH_SOURCE, landing, checkpoint, once=True)
    assert nothing_new.rows == 0 and _windows(project, [1, 2, 3]) == [(2, 15.0), (2, 3.0), (2, 8.0)]


def test_the_cli_streams_json_and_sets_bad_events_aside(project: Settings, spark, tmp_path: Path,
                                                        monkeypatch: pytest.MonkeyPatch,
                                                        capsys: pytest.CaptureFixture[str]) -> None:
    landing, checkpoint = tmp_path / "landing", tmp_path / "checkpoint"
    landing.mkdir()
    now = pd.Timestamp.now(tz="UTC").isoformat()
    lines = [{"account_id": 11, "event_id": 1, "amount": 4.0, "event_timestamp": now},
             {"account_id": 11, "event_id": 2, "amount": None, "event_timestamp": now},  # no amount: set aside
             {"account_id": 12, "event_id": 3, "amount": 1.0, "event_timestamp": now}]
    (landing / "events.json").write_text("\n".join(json.dumps(line) for line in lines))
    monkeypatch.setenv("TIDEMARK_HOME", str(project.home))
    monkeypatch.setenv("TIDEMARK_REDIS_URL", str(project.redis_url))
    code = tidemark(["--repo", str(project.feast_repo), "features", "stream", "--push-source", PUSH_SOURCE,
                     "--landing", str(landing), "--checkpoint", str(checkpoint), "--format", "json", "--once"])
    out = capsys.readouterr().out
    assert code == 0, out
    assert f"{VIEW:<20} added 2, replays 0" in out and "refused 1" in out
    assert _windows(project, [11, 12]) == [(1, 4.0), (1, 1.0)]
    rejected = [json.loads(line) for line in (checkpoint / "rejected" / "batch-0.jsonl").read_text().splitlines()]
    assert [r["event_id"] for r in rejected] == [2] and "row 1, column 'amount'" in rejected[0]["_rejected_because"]


def test_what_the_job_refuses_before_it_starts(project: Settings, spark, tmp_path: Path) -> None:
    pusher = FeatureClient(project).event_pusher()
    with pytest.raises(UnknownPushSourceError, match="did you mean 'acct_push'"):
        run_stream(spark, pusher, "acct_pushh", tmp_path, tmp_path / "c", once=True)
    with pytest.raises(DataNotFoundError, match="land one file first"):
        run_stream(spark, pusher, PUSH_SOURCE, tmp_path / "empty", tmp_path / "c", once=True)
