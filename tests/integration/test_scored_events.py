"""A model whose project declares ``push_scored_events``: each scored request is pushed as an
event before its answer, so the same entity's next request reads it (real Redis, MLflow, a model
whose prediction is the account's event count over the last hour)."""

from __future__ import annotations

import logging

import pandas as pd
import pytest
from starlette.testclient import TestClient

from serving.server import Server, build_server
from tests.integration.stream_project import (  # noqa: F401  (module-scoped fixtures)
    MODEL,
    stream_http,
    stream_server,
    stream_settings,
    window_count,
)
from tidemark.errors import ConfigError
from tidemark.settings import Settings

pytestmark = pytest.mark.integration


def _predict(http: TestClient, **row: object) -> dict:
    answer = http.post(f"/v1/models/{MODEL}/predict", json={"rows": [{"amount": 12.0, **row}]})
    assert answer.status_code == 200, answer.text
    return answer.json()


def test_the_next_request_sees_the_scored_event_and_a_replay_counts_once(stream_settings: Settings,  # noqa: F811
                                                                         stream_http: TestClient) -> None:  # noqa: F811
    first = _predict(stream_http, account_id=901, event_id=100)
    assert first["pushed"] is True and first["predictions"][0]["value"] == pytest.approx(0.0, abs=1e-6)
    second = _predict(stream_http, account_id=901, event_id=101)  # the first request's event, read back
    assert second["pushed"] is True and second["predictions"][0]["value"] == pytest.approx(1.0, abs=1e-6)
    replay = _predict(stream_http, account_id=901, event_id=101)  # a client's retry of the second request
    assert replay["pushed"] is True and replay["predictions"][0]["value"] == pytest.approx(2.0, abs=1e-6)
    after = _predict(stream_http, account_id=901, event_id=102)
    assert after["predictions"][0]["value"] == pytest.approx(2.0, abs=1e-6)  # the retry did not count again
    assert window_count(stream_settings, 901) == 3
    assert window_count(stream_settings, 902) == 0  # another entity's window is its own


def test_a_clients_event_time_is_kept(stream_settings: Settings, stream_http: TestClient) -> None:  # noqa: F811
    two_hours_ago = (pd.Timestamp.now(tz="UTC") - pd.Timedelta(hours=2)).isoformat()
    late = _predict(stream_http, account_id=911, event_id=1, event_timestamp=two_hours_ago)
    assert late["pushed"] is True
    assert window_count(stream_settings, 911) == 0  # out of the 1 h window: the receive time was not used
    _predict(stream_http, account_id=911, event_id=2)
    assert window_count(stream_settings, 911) == 1


def test_a_failed_push_still_answers_and_is_counted(stream_settings: Settings,  # noqa: F811
                                                    stream_http: TestClient,  # noqa: F811
                                                    caplog: pytest.LogCaptureFixture) -> None:
    with caplog.at_level(logging.WARNING, "serving.scored_events"):
        for _ in range(3):  # the view's event id is missing: the push is refused, every time
            no_id = _predict(stream_http, account_id=921)
            assert no_id["pushed"] is False and no_id["predictions"][0]["value"] == pytest.approx(0.0, abs=1e-6)
    assert window_count(stream_settings, 921) == 0
    metrics = stream_http.get("/metrics").text
    assert f'tidemark_push_errors_total{{model="{MODEL}",reason="bad_event"}} 3.0' in metrics
    # counted each time, logged once (the rest within the minute are held back, not written per request)
    refused = [r.getMessage() for r in caplog.records if "not pushed" in r.getMessage()]
    assert len(refused) == 1 and "event_id" in refused[0], refused
    assert f'tidemark_push_errors_total{{model="{MODEL}",reason="store_unavailable"}} 0.0' in metrics
    spec = stream_http.get("/openapi.json").json()
    answer = spec["paths"][f"/v1/models/{MODEL}/predict"]["post"]["responses"]["200"]
    assert "pushed" in answer["content"]["application/json"]["schema"]["properties"]


def test_an_unknown_push_source_stops_the_server_at_start(stream_settings: Settings,  # noqa: F811
                                                          stream_server: Server) -> None:  # noqa: F811
    with pytest.raises(ConfigError, match=r"push_scored_events: 'acct_pushh'.*did you mean 'acct_push'"):
        build_server(stream_settings, models=[MODEL], refresh_s=3600, prediction_log=False,
                     push_scored={MODEL: "acct_pushh"})


def test_a_replay_server_reads_each_row_as_of_its_recorded_time(stream_settings: Settings,  # noqa: F811
                                                                stream_server: Server) -> None:  # noqa: F811
    """A replay server reads each row as of just before its own recorded time: a later row's event,
    already pushed, is not in an earlier row's window (a live server, reading as of now, counts
    it). The state keeps 1.25 windows, so such reads are exact back to a quarter window."""
    replay = build_server(stream_settings, models=[MODEL], refresh_s=3600, prediction_log=False,
                          push_scored={MODEL: "acct_push"}, replay=True)
    try:
        with TestClient(replay.app) as http:
            now = pd.Timestamp.now(tz="UTC")
            seen = [_predict(http, account_id=931, event_id=500 + i,
                             event_timestamp=(now - pd.Timedelta(minutes=m)).isoformat())["predictions"][0]["value"]
                    for i, m in enumerate((10, 4, 12))]
            # -10 min: nothing before it; -4 min: the -10 one; -12 min: both others are later
            assert seen == pytest.approx([0.0, 1.0, 0.0], abs=1e-6)
            live = _predict(http, account_id=931, event_id=600)  # no event time: as of now
            assert live["predictions"][0]["value"] == pytest.approx(3.0, abs=1e-6)
    finally:
        replay.close()
