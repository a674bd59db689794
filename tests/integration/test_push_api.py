"""``POST /v1/push`` on a real server: events over HTTP into a stream feature view's window state
in a real Redis, read back by the model's next prediction; the admin token; bad rows refused whole,
naming the row and the column; an unknown push source."""

from __future__ import annotations

import json

import pandas as pd
import pytest
from starlette.testclient import TestClient

from serving.app import create_app
from serving.server import Server
from tests.integration.stream_project import (  # noqa: F401  (module-scoped fixtures)
    MODEL,
    PUSH_SOURCE,
    TOKEN,
    VIEW,
    stream_http,
    stream_server,
    stream_settings,
    window_count,
)
from tidemark.settings import Settings

pytestmark = pytest.mark.integration

AUTH = {"Authorization": f"Bearer {TOKEN}"}


def _event(account: int, event_id: int, amount: float = 10.0, **more: object) -> dict:
    return {"account_id": account, "event_timestamp": pd.Timestamp.now(tz="UTC").isoformat(), "amount": amount,
            "event_id": event_id, **more}


def test_pushed_events_are_counted_once_and_served_at_once(stream_settings: Settings,  # noqa: F811
                                                           stream_http: TestClient) -> None:  # noqa: F811
    rows = [_event(501, 1), _event(501, 2)]  # event times as ISO 8601 text
    answer = stream_http.post("/v1/push", json={"push_source": PUSH_SOURCE, "rows": rows}, headers=AUTH)
    assert answer.status_code == 200, answer.text
    assert answer.json() == {"views": {VIEW: {"added": 2, "duplicates": 0, "expired": 0}}}
    micros = {**_event(502, 3), "event_timestamp": pd.Timestamp.now(tz="UTC").value // 1000}  # or integer µs
    answer = stream_http.post("/v1/push", json={"push_source": PUSH_SOURCE, "rows": [micros]}, headers=AUTH)
    assert answer.json() == {"views": {VIEW: {"added": 1, "duplicates": 0, "expired": 0}}}
    again = stream_http.post("/v1/push", json={"push_source": PUSH_SOURCE, "rows": rows[:2]}, headers=AUTH)
    assert again.json() == {"views": {VIEW: {"added": 0, "duplicates": 2, "expired": 0}}}
    assert window_count(stream_settings, 501) == 2 and window_count(stream_settings, 502) == 1
    scored = stream_http.post(f"/v1/models/{MODEL}/predict", json={"rows": [{"account_id": 501, "amount": 5.0,
                                                                              "event_id": 10}]})
    assert scored.status_code == 200, scored.text
    assert scored.json()["predictions"][0]["value"] == pytest.approx(2.0, abs=1e-6)  # what the push stored


def test_push_needs_the_admin_token(stream_server: Server, stream_http: TestClient) -> None:  # noqa: F811
    body = {"push_source": PUSH_SOURCE, "rows": [_event(601, 1)]}
    assert stream_http.post("/v1/push", json=body).status_code == 401
    wrong = stream_http.post("/v1/push", json=body, headers={"Authorization": "Bearer nope"})
    assert wrong.status_code == 401 and wrong.headers["www-authenticate"] == "Bearer"
    no_token = TestClient(create_app(stream_server.scorer, pusher=_pusher(stream_server)))
    disabled = no_token.post("/v1/push", json=body, headers=AUTH)
    assert disabled.status_code == 403 and "TIDEMARK_ADMIN_TOKEN" in disabled.json()["detail"][0]["msg"]
    assert window_count(stream_server.settings, 601) == 0


def _pusher(server: Server):  # the same pusher the server writes with
    from features.sdk import FeatureClient

    return FeatureClient(server.settings).event_pusher()


@pytest.mark.parametrize(("bad", "loc"), [
    ('{"account_id": 701, "event_timestamp": "%s", "amount": NaN, "event_id": 2}', ["rows", 1, "amount"]),
    ('{"account_id": 701, "event_timestamp": "%s", "event_id": 2}', ["rows", 1, "amount"]),
    ('{"account_id": 701, "event_timestamp": "%s", "amount": 1.0}', ["rows", 1, "event_id"]),
    ('{"account_id": "x", "event_timestamp": "%s", "amount": 1.0, "event_id": 2}', ["rows", 1, "account_id"]),
    ('{"account_id": 701, "event_timestamp": "not a time %s", "amount": 1.0, "event_id": 2}',
     ["rows", 1, "event_timestamp"]),
])
def test_a_bad_row_is_a_422_naming_row_and_column_and_stores_nothing(stream_settings: Settings,  # noqa: F811
                                                                       stream_http: TestClient,  # noqa: F811
                                                                       bad: str, loc: list) -> None:
    now = pd.Timestamp.now(tz="UTC").isoformat()
    good = json.dumps(_event(701, 1))
    body = f'{{"push_source": "{PUSH_SOURCE}", "rows": [{good}, {bad % now}]}}'
    answer = stream_http.post("/v1/push", content=body, headers={**AUTH, "content-type": "application/json"})
    assert answer.status_code == 422, answer.text
    detail = answer.json()["detail"][0]
    assert detail["loc"] == loc and f"row 1, column {loc[2]!r}" in detail["msg"]
    assert "Nothing of this push was stored" in detail["msg"]
    assert window_count(stream_settings, 701) == 0  # the good row 0 was not stored either


def test_unknown_push_source_is_a_404_and_bad_bodies_are_4xx(stream_http: TestClient) -> None:  # noqa: F811
    unknown = stream_http.post("/v1/push", json={"push_source": "acct_pushh", "rows": [_event(801, 1)]}, headers=AUTH)
    assert unknown.status_code == 404 and "acct_push" in unknown.json()["detail"][0]["msg"]  # the near match
    not_json = stream_http.post("/v1/push", content=b"{rows", headers={**AUTH, "content-type": "application/json"})
    assert not_json.status_code == 400
    nested = stream_http.post("/v1/push", json={"push_source": PUSH_SOURCE, "rows": [{**_event(801, 1), "amount": [1]}]},
                              headers=AUTH)
    assert nested.status_code == 422 and nested.json()["detail"][0]["loc"] == ["rows", 0, "amount"]
    empty = stream_http.post("/v1/push", json={"push_source": PUSH_SOURCE, "rows": []}, headers=AUTH)
    assert empty.status_code == 422


def test_the_openapi_document_lists_the_push_route(stream_http: TestClient) -> None:  # noqa: F811
    spec = stream_http.get("/openapi.json").json()
    body = spec["paths"]["/v1/push"]["post"]["requestBody"]["content"]["application/json"]["schema"]
    (source,) = body["oneOf"]  # one body schema per push source, its rows' fields required and typed
    assert source["properties"]["push_source"]["const"] == PUSH_SOURCE
    row = source["properties"]["rows"]["items"]
    assert set(row["required"]) == {"account_id", "event_timestamp", "event_id", "amount"}, row
    assert row["properties"]["amount"] == {"type": "number"}
    assert {"401", "403", "404", "422", "503"} <= set(spec["paths"]["/v1/push"]["post"]["responses"])
