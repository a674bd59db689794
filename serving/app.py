"""The HTTP API (ASGI, Starlette): ``/v1/predict``, health, readiness, metrics, OpenAPI.

    POST /v1/predict   {"rows": [{"customer_id": 1042, "merchant_id": 7, "amount": 12.5,
                                  "channel": "ecom", "transaction_id": 99120}, ...]}
                       (transaction_id is optional: it joins delayed labels to the logged scores)
                       -> {"request_id": "...", "predictions": [{"score": 0.0123,
                           "variant": "champion", "model_version": "3", "features_found": true}]}
    GET  /healthz      the process is alive
    GET  /readyz       a champion is loaded and warmed, and the online store answers (503 if not)
    GET  /metrics      Prometheus text format
    GET  /openapi.json
    GET  /v1/canary, POST /v1/canary/{start,step,rollback,promote}
                       need ``Authorization: Bearer $TIDEMARK_ADMIN_TOKEN``; with no token configured
                       the POSTs are disabled (403) and the GET is open (read-only status)

Starlette rather than FastAPI: the request body is validated by hand into field-level messages
(``{"detail": [{"loc": ["rows", 3, "amount"], "msg": "..."}]}``) at a fraction of pydantic's
per-request cost, and the OpenAPI document is written out below, so it stays the contract.
Bad input is always a 4xx; an unavailable online store or an unloaded model is a 503.
"""

from __future__ import annotations

import contextlib
import hmac
import json
import logging
import math
import time
import uuid
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, Protocol

import numpy as np
from starlette.applications import Starlette
from starlette.concurrency import run_in_threadpool
from starlette.requests import Request
from starlette.responses import JSONResponse, PlainTextResponse, Response
from starlette.routing import Route

from features.errors import FeatureStoreError, TidemarkError
from serving.errors import NotReadyError, OverloadedError

if TYPE_CHECKING:
    from serving.scorer import Scorer

__all__ = ["ApiLimits", "create_app", "openapi_spec"]

log = logging.getLogger(__name__)

JOIN_KEYS = ("customer_id", "merchant_id")
#: Optional per row: the payment's id, passed through to the prediction log (the model never sees
#: it), so that delayed fraud labels can be joined to the scores the canary and drift jobs judge.
TRANSACTION_ID = "transaction_id"


@dataclass(frozen=True)
class ApiLimits:
    """What one request may hold."""

    max_rows: int = 1_000
    max_body_bytes: int = 1_000_000


class CanaryAdmin(Protocol):
    """What the canary endpoints call (``pipelines.canary_job.CanaryAdmin`` implements it)."""

    def status(self) -> dict[str, Any]: ...
    def start(self, shadow: bool) -> dict[str, Any]: ...
    def step(self) -> dict[str, Any]: ...
    def rollback(self, reason: str) -> dict[str, Any]: ...
    def promote(self) -> dict[str, Any]: ...


def create_app(scorer: Scorer, *, limits: ApiLimits | None = None, ready: Any = None,
               metrics: Any = None, on_shutdown: Callable[[], None] | None = None,
               admin: CanaryAdmin | None = None, admin_token: str | None = None,
               inline: bool = False, on_predict: Callable[[int, float], None] | None = None) -> Starlette:
    """The ASGI app over ``scorer``. ``ready()`` -> (bool, reasons) backs ``/readyz``;
    ``metrics()`` -> (body, content type) backs ``/metrics``; ``on_shutdown()`` runs when the
    server stops (flush the prediction log). ``inline``: score on the event loop's thread rather
    than in a worker thread (see :func:`serving.server.build_server`). ``on_predict(status,
    seconds)`` is called once per ``POST /v1/predict`` with its HTTP status and its time in the
    handler (body read to response built; 500 when the handler raised)."""
    limits = limits or ApiLimits()

    async def predict(request: Request) -> Response:
        if on_predict is None:
            return await score(request)
        started = time.perf_counter()
        try:
            response = await score(request)
        except BaseException:  # Starlette answers 500; count it before it does
            on_predict(500, time.perf_counter() - started)
            raise
        on_predict(response.status_code, time.perf_counter() - started)
        return response

    async def score(request: Request) -> Response:
        started = time.perf_counter()
        body = await _body(request, limits.max_body_bytes)
        if isinstance(body, Response):
            return body
        rows, errors = _validate(body, scorer.request_columns(), scorer.text_columns(), limits.max_rows)
        if errors:
            return JSONResponse({"detail": errors}, status_code=422)
        request_id = request.headers.get("x-request-id") or uuid.uuid4().hex
        try:
            if inline:  # about a millisecond of CPU: cheaper than two thread hops
                scored = scorer.score(rows, request_id)
            else:  # in a worker thread: concurrent requests overlap their Redis waits and share batches
                scored = await run_in_threadpool(scorer.score, rows, request_id)
        except (NotReadyError, OverloadedError, FeatureStoreError) as exc:  # store down, or a feature it lacks
            return JSONResponse({"detail": str(exc), "request_id": request_id}, status_code=503,
                                headers={"retry-after": "1"})
        predictions = [{"score": float(s), "variant": v, "model_version": m, "features_found": bool(f)}
                       for s, v, m, f in zip(scored.scores, scored.variants, scored.versions,
                                             scored.features_found, strict=True)]
        log.debug("request %s: %d rows in %.2f ms", request_id, len(rows), (time.perf_counter() - started) * 1e3)
        return JSONResponse({"request_id": request_id, "predictions": predictions},
                            headers={"x-request-id": request_id})

    async def healthz(request: Request) -> Response:
        return JSONResponse({"status": "alive"})

    async def readyz(request: Request) -> Response:
        ok, reasons = await run_in_threadpool(ready) if ready is not None else (True, [])  # it PINGs Redis
        return JSONResponse({"ready": ok, "reasons": reasons}, status_code=200 if ok else 503)

    async def metrics_endpoint(request: Request) -> Response:
        if metrics is None:
            return PlainTextResponse("", status_code=404)
        text, content_type = metrics()
        return Response(text, media_type=content_type)

    async def openapi(request: Request) -> Response:
        return JSONResponse(openapi_spec(scorer.request_columns(), scorer.text_columns(), limits))

    async def canary(request: Request) -> Response:
        action = request.path_params.get("action", "status")
        denied = _authorize(request, admin_token, write=action != "status")
        if denied is not None:
            return denied
        if admin is None:
            return _error(404, [], "this server has no canary controller attached")
        body: Any = {}
        if request.method == "POST":
            body = await _body(request, limits.max_body_bytes, empty={},
                               hint='send {}, {"shadow": true} or {"reason": "..."}')
            if isinstance(body, Response):
                return body
            problem = _canary_problem(body)
            if problem is not None:
                return problem
        calls: dict[str, Callable[[], dict[str, Any]]] = {
            "status": admin.status, "step": admin.step, "promote": admin.promote,
            "start": lambda: admin.start(body.get("shadow", True)),
            "rollback": lambda: admin.rollback(body.get("reason") or "manual, through the API"),
        }
        if action not in calls:
            return _error(404, ["action"], f"unknown canary action {action!r}; one of {sorted(calls)}")
        try:
            return JSONResponse(await run_in_threadpool(calls[action]))
        except TidemarkError as exc:  # the controller refused (no challenger, gate failed, ...)
            return _error(409, [], str(exc))
        except Exception as exc:  # Redis or MLflow failed under the controller: say so, don't 500
            log.exception("canary %s failed", action)
            return _error(503, [], f"the canary controller could not {action}: {str(exc)[:300]}")

    @contextlib.asynccontextmanager
    async def lifespan(app: Starlette) -> AsyncIterator[None]:
        yield
        if on_shutdown is not None:
            on_shutdown()

    return Starlette(lifespan=lifespan, routes=[
        Route("/v1/predict", predict, methods=["POST"]),
        Route("/healthz", healthz, methods=["GET"]),
        Route("/readyz", readyz, methods=["GET"]),
        Route("/metrics", metrics_endpoint, methods=["GET"]),
        Route("/openapi.json", openapi, methods=["GET"]),
        Route("/v1/canary", canary, methods=["GET"]),
        Route("/v1/canary/{action}", canary, methods=["POST"]),
    ])


def _authorize(request: Request, token: str | None, *, write: bool) -> Response | None:
    """None when allowed; otherwise the 401/403 to send."""
    if not token:
        if write:
            return _error(403, [], "canary write endpoints are disabled: set TIDEMARK_ADMIN_TOKEN on the server")
        return None
    given = request.headers.get("authorization", "")
    scheme, _, value = given.partition(" ")
    if scheme.lower() != "bearer" or not hmac.compare_digest(value.encode(), token.encode()):
        return JSONResponse({"detail": [{"loc": ["header", "authorization"],
                                         "msg": "send Authorization: Bearer <TIDEMARK_ADMIN_TOKEN>"}]},
                            status_code=401, headers={"www-authenticate": "Bearer"})
    return None


def _canary_problem(body: Any) -> Response | None:
    """The 422 for a canary body that is not ``{"shadow": bool}`` / ``{"reason": str}``, else None."""
    if not isinstance(body, dict):
        return _error(422, [], "the body must be a JSON object")
    shadow, reason = body.get("shadow", True), body.get("reason")
    if not isinstance(shadow, bool):
        return _error(422, ["shadow"], f"must be true or false, got {shadow!r:.40}")
    if reason is not None and not isinstance(reason, str):
        return _error(422, ["reason"], f"must be text, got {reason!r:.40}")
    return None


async def _body(request: Request, max_bytes: int, *, empty: Any = None,
                hint: str = 'send {"rows": [{...}]}') -> Any:
    """The parsed JSON body, or the 400/413 to send; an empty body is ``empty`` when that is not None."""
    declared = request.headers.get("content-length")
    if declared is not None and (not declared.isdigit() or int(declared) > max_bytes):
        return _error(413, [], f"the body may hold at most {max_bytes:,} bytes; send fewer rows per request")
    raw = b""
    async for chunk in request.stream():
        raw += chunk
        if len(raw) > max_bytes:
            return _error(413, [], f"the body may hold at most {max_bytes:,} bytes; send fewer rows per request")
    if empty is not None and not raw.strip():
        return empty
    try:
        return json.loads(raw)
    except (ValueError, RecursionError) as exc:  # bad JSON or UTF-8, an over-long integer, deep nesting
        return _error(400, [], f"the body is not usable JSON ({str(exc)[:120]}); {hint}")


def _error(status: int, loc: list[Any], msg: str) -> JSONResponse:
    return JSONResponse({"detail": [{"loc": loc, "msg": msg}]}, status_code=status)


def _validate(body: Any, request_columns: tuple[str, ...], text: frozenset[str],
              max_rows: int) -> tuple[dict[str, np.ndarray], list[dict[str, Any]]]:
    """Rows as numpy columns (ids int64, numbers float64 with NaN for null, text as objects with
    None), or field-level errors (``loc``, ``msg``); at most 20 errors."""
    if not isinstance(body, dict) or not isinstance(body.get("rows"), list):
        return {}, [{"loc": ["rows"], "msg": 'expected an object {"rows": [ {...}, ... ]}'}]
    rows = body["rows"]
    if not rows:
        return {}, [{"loc": ["rows"], "msg": "rows is empty; send at least one row"}]
    if len(rows) > max_rows:
        return {}, [{"loc": ["rows"], "msg": f"{len(rows):,} rows; at most {max_rows:,} per request"}]
    fields = (*JOIN_KEYS, *request_columns)
    errors: list[dict[str, Any]] = []
    columns: dict[str, list[Any]] = {f: [] for f in (*fields, TRANSACTION_ID)}
    for i, row in enumerate(rows):
        if not isinstance(row, dict):
            errors.append({"loc": ["rows", i], "msg": "each row must be an object"})
            continue
        payment = row.get(TRANSACTION_ID)
        if payment is not None and (payment := _int64(payment)) is None:
            errors.append({"loc": ["rows", i, TRANSACTION_ID], "msg": f"must be a 64-bit integer or null, "
                                                                      f"got {row[TRANSACTION_ID]!r:.40}"})
        columns[TRANSACTION_ID].append(payment)
        for name in fields:
            value = row.get(name)
            if name in JOIN_KEYS and value is not None:
                value = _int64(value)
                problem = None if value is not None else f"must be a 64-bit integer, got {row[name]!r:.40}"
            else:
                problem = _problem(name, value, name in row, name in text)
            if problem:
                errors.append({"loc": ["rows", i, name], "msg": problem})
            columns[name].append(value)
        if len(errors) >= 20:
            break
    if errors:
        return {}, errors
    return {name: _array(values, np.int64 if name in JOIN_KEYS else
                         object if name in text or name == TRANSACTION_ID else np.float64)
            for name, values in columns.items()}, []


def _array(values: list[Any], dtype: Any) -> np.ndarray:
    if dtype is object:  # one Python object (str or None) per row
        out = np.empty(len(values), dtype=object)
        out[:] = values
        return out
    if dtype is np.float64 and None in values:
        values = [math.nan if v is None else v for v in values]
    return np.array(values, dtype=dtype)


def _int64(value: Any) -> int | None:
    """``value`` as a 64-bit integer id, or None when it is not one. An integral float counts, as in
    JSON Schema (``1042.0`` is the integer 1042), up to ±2**53: beyond that a float no longer holds
    every integer, so the JSON parse may already have changed the id."""
    if isinstance(value, bool):
        return None
    if isinstance(value, int):
        return value if -(2**63) <= value < 2**63 else None
    if isinstance(value, float) and value.is_integer() and abs(value) <= 2**53:
        return int(value)
    return None


def _problem(name: str, value: Any, present: bool, is_text: bool) -> str | None:
    if name in JOIN_KEYS:  # present and not null: _validate checks those
        return "required (an integer id)"
    if not present:
        return "required" + (" (text; null if unknown)" if is_text else " (a number; null if unknown)")
    if value is None:
        return None
    if is_text:
        return None if isinstance(value, str) and len(value) <= 200 else f"must be text (at most 200 characters), got {value!r:.40}"
    if isinstance(value, bool) or not isinstance(value, int | float):
        return f"must be a finite number, got {value!r:.40}"
    try:
        if math.isfinite(float(value)):
            return None
    except OverflowError:
        pass
    return f"must be a finite number within ±1.8e308, got {str(value)[:40]}"


def openapi_spec(request_columns: tuple[str, ...], text: frozenset[str], limits: ApiLimits) -> dict[str, Any]:
    """The OpenAPI 3.1 document of this API (request fields as the loaded models need them)."""
    props: dict[str, Any] = {k: {"type": "integer", "format": "int64", "minimum": -(2**63), "maximum": 2**63 - 1}
                             for k in JOIN_KEYS}
    for name in request_columns:
        props[name] = ({"type": ["string", "null"], "maxLength": 200} if name in text
                       else {"type": ["number", "null"]})
    props[TRANSACTION_ID] = {"type": ["integer", "null"], "format": "int64", "minimum": -(2**63),
                             "maximum": 2**63 - 1, "description": "optional: joins delayed labels to the log"}
    row = {"type": "object", "required": [*JOIN_KEYS, *request_columns], "properties": props}
    prediction = {"type": "object", "properties": {
        "score": {"type": "number"}, "variant": {"type": "string", "enum": ["champion", "challenger"]},
        "model_version": {"type": "string"}, "features_found": {"type": "boolean"}}}
    failures = _failures((400, "not JSON"), (413, "body too large"), (422, "invalid rows"),
                         (503, "online store or model unavailable"))
    return {
        "openapi": "3.1.0",
        "info": {"title": "tidemark fraud scoring", "version": "1"},
        "paths": {
            "/v1/predict": {"post": {
                "operationId": "predict",
                "requestBody": {"required": True, "content": {"application/json": {"schema": {
                    "type": "object", "required": ["rows"], "properties": {"rows": {
                        "type": "array", "minItems": 1, "maxItems": limits.max_rows, "items": row}}}}}},
                "responses": {"200": _ok({"type": "object", "properties": {
                    "request_id": {"type": "string"}, "predictions": {"type": "array", "items": prediction}}}),
                    **failures}}},
            "/healthz": {"get": {"operationId": "healthz", "responses": {"200": _ok({"type": "object"})}}},
            "/readyz": {"get": {"operationId": "readyz", "responses": {
                "200": _ok({"type": "object"}), "503": {"description": "not ready"}}}},
            "/metrics": {"get": {"operationId": "metrics", "responses": {"200": {"description": "Prometheus text"}}}},
            "/openapi.json": {"get": {"operationId": "openapi", "responses": {"200": _ok({"type": "object"})}}},
            **_canary_paths(),
        },
        "components": {"securitySchemes": {"bearerAuth": {
            "type": "http", "scheme": "bearer",
            "description": "the server's TIDEMARK_ADMIN_TOKEN; with none configured, canary writes are off (403)"}}},
    }


#: The canary endpoints' error answers: who may call, and what the controller said.
_CANARY_FAILURES = ((400, "not JSON"), (401, "no or wrong bearer token"),
                    (403, "canary writes are disabled: the server has no TIDEMARK_ADMIN_TOKEN"),
                    (404, "no canary controller attached, or an unknown action"),
                    (409, "the controller refused: no challenger, gate not passed, no canary running, ..."),
                    (413, "body too large"), (422, "the body is not {\"shadow\": bool} or {\"reason\": str}"),
                    (503, "Redis or MLflow failed under the controller"))


def _canary_paths() -> dict[str, Any]:
    """``GET /v1/canary`` and ``POST /v1/canary/{action}`` (bearer token)."""
    state = {"type": "object", "description": "the canary state (or, for step, the outcome and the state)"}
    body = {"type": "object", "properties": {
        "shadow": {"type": "boolean", "default": True,
                   "description": "start only: shadow first (true) or straight to 5 % (false)"},
        "reason": {"type": "string", "description": "rollback only: recorded on the challenger version"}}}
    action = {"name": "action", "in": "path", "required": True,
              "schema": {"type": "string", "enum": ["start", "step", "rollback", "promote"]}}
    return {
        "/v1/canary": {"get": {
            "operationId": "canaryStatus", "security": [{"bearerAuth": []}],
            "description": "the canary state; open (no token) on a server with no TIDEMARK_ADMIN_TOKEN",
            "responses": {"200": _ok(state), **_failures(*(f for f in _CANARY_FAILURES if f[0] in (401, 404, 503)))}}},
        "/v1/canary/{action}": {"post": {
            "operationId": "canaryAction", "security": [{"bearerAuth": []}], "parameters": [action],
            "requestBody": {"required": False, "content": {"application/json": {"schema": body}}},
            "responses": {"200": _ok(state), **_failures(*_CANARY_FAILURES)}}},
    }


def _ok(schema: dict[str, Any]) -> dict[str, Any]:
    return {"description": "OK", "content": {"application/json": {"schema": schema}}}


def _failures(*codes: tuple[int, str]) -> dict[str, Any]:
    """Error responses, each ``{"detail": [{"loc": [...], "msg": "..."}]}``."""
    error = {"type": "object", "properties": {"detail": {}}}
    return {str(code): {"description": text, "content": {"application/json": {"schema": error}}}
            for code, text in codes}
