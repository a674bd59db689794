"""The serving API fuzzed against its own OpenAPI document (schemathesis, in-process over ASGI),
on a real server: real Redis (online features, canary state), a real SQLite MLflow registry with a
real champion, the canary controller attached and the admin token sent.

Every operation the document lists is fuzzed, with data that fits the schemas and data that breaks
them; nothing is excluded. The property: no 5xx, and every answer is one the document declares.
A 503 counts as a failure on every operation here: Redis and MLflow are up, so a 503 from
``/v1/predict`` or ``/readyz`` is a wrong answer, and so is one from the canary endpoints, whose 503
means "Redis or MLflow failed under the controller" (a real dependency failure, which this set-up
never has; a controller bug surfacing as that 503 is what this test is for).
"""

from __future__ import annotations

import json
from collections import Counter

import hypothesis
import pytest
import schemathesis
from hypothesis import strategies as st
from schemathesis import GenerationMode
from schemathesis.checks import positive_data_acceptance
from starlette.testclient import TestClient

from serving.app import ApiLimits, openapi_spec
from serving.request_rows import RowSchema
from serving.server import Server

# the module-scoped fixtures that build a real server (each importing module gets its own)
from tests.integration.test_serving import TOKEN, server, settings  # noqa: F401
from tidemark.settings import Settings

pytestmark = pytest.mark.integration

AUTH = {"Authorization": f"Bearer {TOKEN}"}
MODEL = Settings.model_name  # the test server serves the default model name (a class default)


#: Every operation of the document (the paths don't depend on the loaded model's fields).
OPERATIONS = [(path, method.upper()) for path, methods in
              openapi_spec({MODEL: (RowSchema((), ()), None)}, ApiLimits())["paths"].items() for method in methods]


@pytest.fixture(scope="module")
def api(server: Server) -> schemathesis.BaseSchema:  # noqa: F811
    """The server's own /openapi.json, loaded through the app (no socket); checked against OAS 3.1."""
    schema = schemathesis.openapi.from_asgi("/openapi.json", server.app)
    schema.validate()
    return schema


# Not ``schemathesis.pytest.from_fixture`` + ``@schema.parametrize()``: with pytest 9.2 its lazy
# runner fails before running anything (it reads ``request.node._nodeid``, which pytest removed).
# The same generation through the public strategy API, one pytest test per operation.
@pytest.mark.parametrize(("path", "method"), OPERATIONS, ids=[f"{m} {p}" for p, m in OPERATIONS])
def test_no_operation_answers_5xx(api: schemathesis.BaseSchema, path: str, method: str) -> None:
    operation = api[path][method]
    cases = st.one_of(operation.as_strategy(GenerationMode.POSITIVE), operation.as_strategy(GenerationMode.NEGATIVE))
    seen: Counter[int] = Counter()
    excluded = [positive_data_acceptance] if path == "/v1/push" else None

    @hypothesis.settings(max_examples=40, deadline=None, derandomize=True, database=None,
                         suppress_health_check=list(hypothesis.HealthCheck))
    @hypothesis.given(case=cases)
    def fuzz(case: schemathesis.Case) -> None:
        response = case.call(headers=AUTH)  # the canary endpoints get past the token, to the controller
        seen[response.status_code] += 1
        assert response.status_code < 500, (f"{case.method} {case.formatted_path}: {response.status_code} "
                                            f"{response.text[:300]}")
        # schemathesis' default checks; for /v1/push all but "schema-valid data is accepted": an event
        # time is refused more than 5 minutes past the server's clock, which no schema can say
        case.validate_response(response, headers=AUTH, excluded_checks=excluded)

    fuzz()
    # the fuzzing reached past validation: rows were scored, the controller answered
    reached = {"/v1/canary/{action}": {200, 409}}.get(path, {200})
    assert reached & set(seen), f"{method} {path}: only {dict(seen)}"
    assert seen.total() >= (20 if operation.body or operation.path_parameters else 1), dict(seen)


@pytest.fixture(scope="module")
def client(server: Server) -> TestClient:  # noqa: F811
    """A plain client of the same app (not entered: the fuzzer's ASGI client owns the lifespan)."""
    return TestClient(server.app)


def test_integral_float_ids_are_ids(client: TestClient) -> None:
    """Found by the fuzzer: JSON Schema's integer takes 1042.0, the API answered 422."""
    rows = [{"customer_id": 7, "merchant_id": 3, "amount": 25.0, "channel": "ecom", "transaction_id": 12}]
    as_floats = [{**rows[0], "customer_id": 7.0, "merchant_id": 3.0, "transaction_id": 12.0}]
    exact = client.post("/v1/predict", json={"rows": rows})
    floated = client.post("/v1/predict", json={"rows": as_floats})
    assert exact.status_code == floated.status_code == 200, floated.text
    assert floated.json()["predictions"][0]["score"] == exact.json()["predictions"][0]["score"]
    for bad in (7.5, 2.0**60, float("nan")):  # a fraction, or beyond where floats hold every integer
        answer = client.post("/v1/predict", content=json.dumps({"rows": [{**rows[0], "customer_id": bad}]}),
                             headers={"content-type": "application/json"})
        assert answer.status_code == 422 and answer.json()["detail"][0]["loc"] == ["rows", 0, "customer_id"]


@pytest.mark.parametrize(("body", "status", "loc"), [
    (b"\xff\xfe{", 400, []),             # not UTF-8: was a 500 (UnicodeDecodeError is no JSONDecodeError)
    (b"[" * 50_000, 400, []),             # nested past the recursion limit: was a 500
    (b'{"shadow": "false"}', 422, ["shadow"]),  # was bool("false"): a canary started in shadow mode
    (b'{"reason": 5}', 422, ["reason"]),
    (b"[1]", 422, []),
    (b" " * 2_000_000, 413, []),          # was read whole, unbounded
])
def test_canary_bodies_are_checked(client: TestClient, body: bytes, status: int, loc: list) -> None:
    answer = client.post("/v1/canary/start", content=body, headers={**AUTH, "content-type": "application/json"})
    assert answer.status_code == status, answer.text[:300]
    assert answer.json()["detail"][0]["loc"] == loc
