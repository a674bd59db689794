"""The HTTP API (ASGI, Starlette): ``/v1/predict``, health, readiness, metrics, OpenAPI.

    POST /v1/models/{name}/predict, and /v1/predict for the model this server runs
                       {"rows": [{<join keys>, <request fields>, <label row ids, optional>}, ...]}
                       e.g. a driver model's {"driver_id": 1001, "trip_distance_km": 3.2,
                       "trip_id": 99120}
                       -> {"request_id": "...", "model": "...", "predictions": [{"score": 0.0123,
                           "variant": "champion", "model_version": "3", "features_found": true}]}
                       a prediction by the model contract's task: "score" (binary: P(positive)),
                       "value" (regression), "probabilities" + "predicted_class" (multiclass)
                       with ``"pushed": true|false`` added for a model that pushes its scored
                       events (``push_scored_events``; :mod:`serving.scored_events`)
    GET  /healthz      the process is alive
    GET  /readyz       a champion is loaded and warmed, and the online store answers (503 if not)
    GET  /metrics      Prometheus text format
    GET  /openapi.json
    POST /v1/push      {"push_source": "...", "rows": [{<join keys>, <event time>, <event id>,
                       <aggregated columns>}, ...]} -> {"views": {view: {"added": n, "duplicates": n,
                       "expired": n}}}: events into the stream feature views that read the push source
                       (422 names the bad row and column, and nothing was stored; 404 unknown source)
    GET  /v1/canary, POST /v1/canary/{start,step,rollback,promote}, and POST /v1/push
                       need ``Authorization: Bearer $TIDEMARK_ADMIN_TOKEN``; with no token configured
                       the POSTs are disabled (403) and the GET is open (read-only status)

What a client can't do to the server:
    * send what can't be stored: text must be valid Unicode (a lone surrogate is a 422 naming the
      field, never a row that later breaks the prediction log), ``x-request-id`` at most 128
      printable ASCII characters, the body JSON with ``Content-Type: application/json`` (415);
    * hold a worker: the body must arrive within ``body_timeout_s`` of the headers (408, the
      connection closed); a client that disconnects mid-body is counted as a disconnect, not as a
      5xx, and logs nothing;
    * learn internals: a 503 says what is unavailable (the online store, a model, capacity) and the
      request id, nothing more; the detail, credentials redacted, goes to the server log.
What a fault can't do: stall the event loop. Scoring runs on the loop's thread on a CPU node
only while the online store answers fast; when its reads get slow (``store.slow``) requests move
to at most ``max_in_flight`` worker threads (past that, a 503 at once), and while it is down
(``store.open``: the circuit breaker of :mod:`features.circuit_breaker`) they fail in
microseconds. ``/healthz`` and ``/readyz`` do no I/O.

Starlette rather than FastAPI: the request body is validated by hand into field-level messages
(``{"detail": [{"loc": ["rows", 3, "amount"], "msg": "..."}]}``) at a fraction of pydantic's
per-request cost, and the OpenAPI document is written out below, so it stays the contract. ``POST``
predict is answered before Starlette's middleware and router (:class:`_ServingApp`), by the same
handler, with the same messages, status codes and headers.
Bad input is always a 4xx; an unavailable online store or an unloaded model is a 503.
"""

from __future__ import annotations

import asyncio
import contextlib
import hmac
import json
import logging
import math
import re
import time
import uuid
from collections.abc import AsyncIterator, Awaitable, Callable, Mapping
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, Protocol, cast

import numpy as np
from starlette.applications import Starlette
from starlette.concurrency import run_in_threadpool
from starlette.requests import ClientDisconnect, Request
from starlette.responses import JSONResponse, PlainTextResponse, Response
from starlette.routing import Route
from starlette.types import Receive, Scope, Send

from features.errors import EventError, FeatureStoreError, OnlineStoreError, UnknownPushSourceError
from features.online_views import now_us
from features.redaction import redact
from serving.errors import NotReadyError, OverloadedError
from serving.event_push import EventSink, event_error_detail, push_request
from serving.openapi import openapi_spec
from serving.request_rows import unicode_text, validate_rows
from serving.scored_events import ScoredEvents
from tidemark.errors import TidemarkError

if TYPE_CHECKING:
    from serving.model_contract import ModelContract
    from serving.scorer import Scorer

__all__ = ["ApiLimits", "StoreHealth", "create_app", "openapi_spec"]

log = logging.getLogger(__name__)



@dataclass(frozen=True)
class ApiLimits:
    """What one request may hold and take."""

    max_rows: int = 1_000
    max_body_bytes: int = 1_000_000
    body_timeout_s: float = 5.0   # seconds for the whole body to arrive once the headers have
    max_in_flight: int = 32       # requests scored on worker threads at once; past it, a 503 at once
    max_request_id: int = 128     # characters of a client's x-request-id (printable ASCII)


class StoreHealth(Protocol):
    """What the app asks of the online store's circuit breaker (:class:`features.circuit_breaker.CircuitBreaker`)."""

    @property
    def open(self) -> bool: ...
    @property
    def slow(self) -> bool: ...


class CanaryAdmin(Protocol):
    """What the canary endpoints call (``pipelines.canary.CanaryAdmin`` implements it)."""

    def status(self) -> dict[str, Any]: ...
    def start(self, shadow: bool) -> dict[str, Any]: ...
    def step(self) -> dict[str, Any]: ...
    def rollback(self, reason: str) -> dict[str, Any]: ...
    def promote(self) -> dict[str, Any]: ...


def create_app(scorers: Scorer | Mapping[str, Scorer], *, limits: ApiLimits | None = None, ready: Any = None,
               metrics: Any = None, on_shutdown: Callable[[], None] | None = None,
               admin: CanaryAdmin | Mapping[str, CanaryAdmin] | None = None, admin_token: str | None = None,
               inline: bool = False, on_predict: Callable[[str, int, float], None] | None = None,
               store: StoreHealth | None = None, pusher: EventSink | None = None,
               scored_events: Mapping[str, ScoredEvents] | None = None, replay: bool = False) -> Starlette:
    """The ASGI app over ``scorers`` (one per served model, by name; the first is the default,
    which ``/v1/predict`` and ``/v1/canary`` mean). ``ready()`` -> (bool, reasons) backs
    ``/readyz`` (it must not block: it runs on the event loop); ``store`` says when the online
    store is slow (score on worker threads, not inline) or down; ``metrics()`` -> (body, content
    type) backs ``/metrics``; ``on_shutdown()`` runs when the server stops (flush the prediction
    logs). ``admin``: the canary controller of each model (one: the default model's). ``inline``:
    score on the event loop's thread rather than in a worker thread (see
    :func:`serving.server.build_server`). ``on_predict(model, status, seconds)`` is called once per
    predict request with its HTTP status and its time in the handler (body read to response built;
    500 when the handler raised; 499 when the client went away mid-body). ``pusher``: the
    events' write path behind ``POST /v1/push`` (None: that route answers 404);
    ``scored_events``: per model whose scored rows are pushed, its :class:`ScoredEvents`.
    ``replay``: a replay of recorded traffic (``tidemark serve --replay``): the features of a pushing
    model's row are read as of just before the row's own event time, not now, so hours of recorded
    events replayed in minutes see the windows production saw (exact back to a quarter of the
    longest window, which the online state keeps); rows without an event time read as of now."""
    served: dict[str, Scorer] = dict(scorers) if isinstance(scorers, Mapping) else {scorers.name: scorers}
    if not served:
        raise ValueError("create_app needs at least one scorer")
    default = next(iter(served))
    admins: dict[str, CanaryAdmin] = (dict(admin) if isinstance(admin, Mapping)
                                      else {default: admin} if admin is not None else {})
    limits = limits or ApiLimits()
    pushes = dict(scored_events or {})
    workers = _Workers(limits.max_in_flight)
    unavailable = _Unavailable()

    def unknown(name: str) -> Response:
        return _error(404, ["path", "name"], f"unknown model {name!r:.80}; this server serves "
                                             f"{', '.join(map(repr, served))}")

    async def predict(request: Request) -> Response:
        # The routes stay for what the raw path leaves to Starlette (another method: 405 with Allow);
        # a _JSON is an ASGI response like any other.
        return cast(Response, await answer(request.path_params.get("name", default), request.headers,
                                           request.stream()))

    async def answer(name: str, headers: Mapping[str, str], stream: AsyncIterator[bytes]) -> _Answer:
        scorer = served.get(name)
        if scorer is None:
            return unknown(name)
        if on_predict is None:
            return await score(headers, stream, scorer)
        started = time.perf_counter()
        try:
            response = await score(headers, stream, scorer)
        except BaseException:  # Starlette (or the raw path) answers 500; count it before it does
            on_predict(name, 500, time.perf_counter() - started)
            raise
        on_predict(name, response.status_code, time.perf_counter() - started)
        return response

    async def score(headers: Mapping[str, str], stream: AsyncIterator[bytes], scorer: Scorer) -> _Answer:
        started, received_us = time.perf_counter(), now_us()
        refused = _content_type_problem(headers) or _request_id_problem(headers, limits.max_request_id)
        if refused is not None:
            return refused
        body = await _body(headers, stream, limits)
        if isinstance(body, Response):
            return body
        schema, contract = scorer.row_schema(), scorer.contract()
        if contract is None:
            return unavailable.answer(NotReadyError("no champion model is loaded"), uuid.uuid4().hex)
        rows, errors = validate_rows(body, schema, limits.max_rows)
        if errors:
            return JSONResponse({"detail": errors}, status_code=422)
        request_id = headers.get("x-request-id") or uuid.uuid4().hex
        events = pushes.get(scorer.name)

        at_us = _replay_instants(body["rows"], events, received_us) if replay and events is not None else None

        def work() -> tuple[Any, bool | None]:  # scored, then pushed before the answer: read after write
            scored = scorer.score(rows, request_id, at_us=at_us)
            return scored, (events.push(body["rows"], received_us) if events is not None else None)

        try:
            if inline and not (store is not None and store.slow):  # ~1 ms of CPU: cheaper than two thread hops
                scored, pushed = work()
            else:  # worker threads: concurrent requests overlap their Redis waits, and the loop stays free
                scored, pushed = await workers.run(work)
        except (NotReadyError, OverloadedError, FeatureStoreError) as exc:  # store down, no model, at capacity
            return unavailable.answer(exc, request_id)
        predictions = [{**p, "variant": v, "model_version": m, "features_found": bool(f)}
                       for p, v, m, f in zip(_predictions(contract, scored.scores), scored.variants, scored.versions,
                                             scored.features_found, strict=True)]
        log.debug("request %s: %d rows in %.2f ms", request_id, len(predictions),
                  (time.perf_counter() - started) * 1e3)
        answer: dict[str, Any] = {"request_id": request_id, "model": scorer.name, "predictions": predictions}
        if pushed is not None:
            answer["pushed"] = pushed
        return _JSON(answer, request_id)

    async def push(request: Request) -> Response:
        denied = _authorize(request, admin_token, write=True, what="POST /v1/push is")
        if denied is not None:
            return denied
        refused = _content_type_problem(request.headers)
        if refused is not None:
            return refused
        body = await _body(request.headers, request.stream(), limits,
                           hint='send {"push_source": "...", "rows": [{...}]}')
        if isinstance(body, Response):
            return body
        source, rows, errors = push_request(body, limits.max_rows)
        if errors:
            return JSONResponse({"detail": errors}, status_code=422)
        if pusher is None:
            return _error(404, ["push_source"], "this server has no push path for events (no online store attached)")
        try:  # one Redis round trip per view: off the event loop, within the worker bound
            counts = await workers.run(pusher.push, source, rows)
        except EventError as exc:  # nothing of the push was stored
            return JSONResponse({"detail": event_error_detail(exc)}, status_code=422)
        except UnknownPushSourceError as exc:
            return _error(404, ["push_source"], str(exc))
        except (OverloadedError, FeatureStoreError) as exc:  # the store is down, or the server at capacity
            return unavailable.answer(exc, request.headers.get("x-request-id") or uuid.uuid4().hex)
        return JSONResponse({"views": {view: c.as_dict() for view, c in counts.items()}})

    async def healthz(request: Request) -> Response:
        return JSONResponse({"status": "alive"})

    async def readyz(request: Request) -> Response:
        ok, reasons = ready() if ready is not None else (True, [])  # no I/O: state kept by the server's watchers
        return JSONResponse({"ready": ok, "reasons": reasons}, status_code=200 if ok else 503)

    async def metrics_endpoint(request: Request) -> Response:
        if metrics is None:
            return PlainTextResponse("", status_code=404)
        text, content_type = metrics()
        return Response(text, media_type=content_type)

    async def openapi(request: Request) -> Response:
        return JSONResponse(openapi_spec({n: (s.row_schema(), s.contract()) for n, s in served.items()}, limits,
                                         push_sources={s: pusher.row_fields(s) for s in pusher.push_sources}
                                         if pusher is not None else {},
                                         pushing=frozenset(pushes)))

    async def canary(request: Request) -> Response:
        name = request.path_params.get("name", default)
        if name not in served:
            return unknown(name)
        action = request.path_params.get("action", "status")
        denied = _authorize(request, admin_token, write=action != "status")
        if denied is not None:
            return denied
        admin = admins.get(name)
        if admin is None:
            return _error(404, [], f"this server has no canary controller attached for {name!r:.80}")
        body: Any = {}
        if request.method == "POST":
            body = await _body(request.headers, request.stream(), limits, empty={},
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
        except Exception:  # Redis or MLflow failed under the controller: say so, don't 500 (the detail: the log)
            log.exception("canary %s failed", action)
            return _error(503, [], f"the canary controller could not {action}: Redis or MLflow failed; see the "
                                   "server log")

    @contextlib.asynccontextmanager
    async def lifespan(app: Starlette) -> AsyncIterator[None]:
        yield
        if on_shutdown is not None:
            on_shutdown()

    return _ServingApp(answer, default, lifespan=lifespan, routes=[
        Route("/v1/predict", predict, methods=["POST"]),
        Route("/v1/models/{name}/predict", predict, methods=["POST"]),
        Route("/healthz", healthz, methods=["GET"]),
        Route("/readyz", readyz, methods=["GET"]),
        Route("/metrics", metrics_endpoint, methods=["GET"]),
        Route("/openapi.json", openapi, methods=["GET"]),
        Route("/v1/push", push, methods=["POST"]),
        Route("/v1/canary", canary, methods=["GET"]),
        Route("/v1/canary/{action}", canary, methods=["POST"]),
        Route("/v1/models/{name}/canary", canary, methods=["GET"]),
        Route("/v1/models/{name}/canary/{action}", canary, methods=["POST"]),
    ])


def _route_path(scope: Scope) -> str:
    """The path Starlette's router matches: ``path`` less ``root_path`` (as ``starlette._utils.get_route_path``)."""
    path: str = scope["path"]
    root_path = scope.get("root_path", "")
    if not root_path or not path.startswith(root_path):
        return path
    if path == root_path:
        return ""
    return path[len(root_path):] if path[len(root_path)] == "/" else path


_PREDICT_PATH = re.compile(r"/v1/models/(?P<name>[^/]+)/predict")  # Starlette's ``{name}``: one path segment
_ENCODE_JSON = json.JSONEncoder(ensure_ascii=False, allow_nan=False, separators=(",", ":")).encode  # JSONResponse's


class _JSON:
    """A predict answer (200, JSON, ``x-request-id``): the bytes and headers ``JSONResponse`` sends,
    without building a Starlette response object per request."""

    __slots__ = ("body", "request_id")
    status_code = 200

    def __init__(self, content: Any, request_id: str) -> None:
        self.body = _ENCODE_JSON(content).encode()
        self.request_id = request_id

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        await send({"type": "http.response.start", "status": 200, "headers": [
            (b"x-request-id", self.request_id.encode("latin-1")),
            (b"content-length", str(len(self.body)).encode("latin-1")), (b"content-type", b"application/json")]})
        await send({"type": "http.response.body", "body": self.body})


_Answer = Response | _JSON


class _ServingApp(Starlette):
    """Starlette, with ``POST /v1/predict`` and ``POST /v1/models/{name}/predict`` answered before
    its middleware and router, which cost a one-row request about as much CPU as reading its
    features (``docs/benchmarks.md``, issue 18). The same handler runs as the routes would run it
    (same checks, messages, status codes and headers); an exception is answered as Starlette's
    error middleware answers it (500, ``Internal Server Error``) and re-raised to the server. Every
    other request, and a predict path with another method (405), goes through Starlette."""

    def __init__(self, answer: Callable[[str, Mapping[str, str], AsyncIterator[bytes]], Awaitable[_Answer]],
                 default: str, **kwargs: Any) -> None:
        super().__init__(**kwargs)
        self._answer, self._default = answer, default

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] == "http" and scope["method"] == "POST":
            name = self._model(_route_path(scope))
            if name is not None:
                request = Request(scope, receive)
                try:
                    response = await self._answer(name, request.headers, request.stream())
                except Exception:
                    await PlainTextResponse("Internal Server Error", status_code=500)(scope, receive, send)
                    raise
                await response(scope, receive, send)
                return
        await super().__call__(scope, receive, send)

    def _model(self, path: str) -> str | None:
        """The model a predict path names (``/v1/predict``: the default), else None."""
        if path == "/v1/predict":
            return self._default
        if path.startswith("/v1/models/") and (match := _PREDICT_PATH.fullmatch(path)) is not None:
            return match["name"]
        return None


def _authorize(request: Request, token: str | None, *, write: bool,
               what: str = "canary write endpoints are") -> Response | None:
    """None when allowed; otherwise the 401/403 to send."""
    if not token:
        if write:
            return _error(403, [], f"{what} disabled: set TIDEMARK_ADMIN_TOKEN on the server")
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
    if reason is not None and not (isinstance(reason, str) and unicode_text(reason)):
        return _error(422, ["reason"], f"must be valid Unicode text, got {reason!r:.40}")
    return None


async def _body(headers: Mapping[str, str], stream: AsyncIterator[bytes], limits: ApiLimits, *, empty: Any = None,
                hint: str = 'send {"rows": [{...}]}') -> Any:
    """The parsed JSON body, or the response to send: 400 (not JSON), 413 (too large), 415 (not
    declared JSON), 408 (not all there within ``body_timeout_s``), 499 (the client went away; never
    sent). An empty body is ``empty`` when that is not None."""
    declared = headers.get("content-length")
    if declared is not None and (not declared.isdigit() or int(declared) > limits.max_body_bytes):
        return _too_large(limits)
    raw = b""
    try:
        async with asyncio.timeout(limits.body_timeout_s):
            async for chunk in stream:
                raw += chunk
                if len(raw) > limits.max_body_bytes:
                    return _too_large(limits)
    except TimeoutError:  # a slow or stalled client must not hold a connection and a task forever
        return JSONResponse({"detail": [{"loc": [], "msg": f"the body did not arrive within "
                                                           f"{limits.body_timeout_s:g} s; send it at once"}]},
                            status_code=408, headers={"connection": "close"})
    except ClientDisconnect:  # gone mid-body: nobody to answer, nothing to log
        return Response(status_code=499)
    if empty is not None and not raw.strip():
        return empty
    if empty is not None and (refused := _content_type_problem(headers)) is not None:
        return refused
    try:
        return json.loads(raw)
    except (ValueError, RecursionError) as exc:  # bad JSON or UTF-8, an over-long integer, deep nesting
        return _error(400, [], f"the body is not usable JSON ({str(exc)[:120]}); {hint}")


def _too_large(limits: ApiLimits) -> JSONResponse:
    return _error(413, [], f"the body may hold at most {limits.max_body_bytes:,} bytes; send fewer rows per request")


def _content_type_problem(headers: Mapping[str, str]) -> Response | None:
    """The 415 for a body not declared as JSON, else None."""
    declared = headers.get("content-type", "")
    media = declared.partition(";")[0].strip().lower()
    if media == "application/json" or (media.startswith("application/") and media.endswith("+json")):
        return None
    return _error(415, ["header", "content-type"], f"send the body as JSON with Content-Type: application/json "
                                                   f"(got {declared[:60]!r})")


def _request_id_problem(headers: Mapping[str, str], max_length: int) -> Response | None:
    """The 422 for an ``x-request-id`` that is not 1 to ``max_length`` printable ASCII characters:
    it is echoed and stored with every logged row, so it is bounded like any other field."""
    given = headers.get("x-request-id")
    if given is None or (0 < len(given) <= max_length and given.isascii() and given.isprintable()
                         and " " not in given):
        return None
    return _error(422, ["header", "x-request-id"], f"must be 1 to {max_length} printable ASCII characters without "
                                                   f"spaces, got {len(given)} characters")


def _error(status: int, loc: list[Any], msg: str) -> JSONResponse:
    return JSONResponse({"detail": [{"loc": loc, "msg": msg}]}, status_code=status)


class _Workers:
    """Worker-thread scoring with a bound: past ``limit`` requests in flight, OverloadedError at
    once rather than a queue. Touched only on the event loop's thread, so it needs no lock."""

    def __init__(self, limit: int) -> None:
        self.limit, self.busy = limit, 0

    async def run(self, fn: Callable[..., Any], *args: Any) -> Any:
        if self.busy >= self.limit:
            raise OverloadedError(f"{self.busy} requests are being scored on worker threads (the limit)")
        self.busy += 1
        try:
            return await run_in_threadpool(fn, *args)
        finally:
            self.busy -= 1


class _Unavailable:
    """The 503 a client gets: what is unavailable and its request id, nothing internal (no key, no
    URL). The detail goes to the log, redacted, at most once per cause every 10 s."""

    _WHAT = ((OnlineStoreError, "the online feature store is unavailable"),
             (OverloadedError, "the server is at capacity"),
             (NotReadyError, "no model is ready to score"),
             (FeatureStoreError, "the model's features can't be read from the online store"))

    def __init__(self, every_s: float = 10.0) -> None:
        self.every_s = every_s
        self._last: dict[str, tuple[float, int]] = {}  # cause -> (last logged, suppressed since)

    def answer(self, exc: Exception, request_id: str) -> JSONResponse:
        what = next(text for kind, text in self._WHAT if isinstance(exc, kind))
        now = time.monotonic()
        last, suppressed = self._last.get(what, (-math.inf, 0))
        if now - last >= self.every_s:
            more = f" ({suppressed} more since the last report)" if suppressed else ""
            log.warning("503 for request %s: %s: %s%s", request_id, what, redact(str(exc)), more)
            self._last[what] = (now, 0)
        else:
            self._last[what] = (last, suppressed + 1)
        return JSONResponse({"detail": [{"loc": [], "msg": f"{what}; retry after 1 s"}], "request_id": request_id},
                            status_code=503, headers={"retry-after": "1", "x-request-id": request_id})


def _predictions(contract: ModelContract, scores: np.ndarray) -> list[dict[str, Any]]:
    """Each row's prediction as its task says: a score, a value, or class probabilities."""
    if contract.task == "binary":
        return [{"score": s} for s in scores.tolist()]
    if contract.task == "regression":
        return [{"value": s} for s in scores.tolist()]
    classes = contract.classes
    return [{"predicted_class": classes[max(range(len(p)), key=p.__getitem__)], "probabilities": dict(zip(classes, p,
                                                                                                       strict=True))}
            for p in scores.tolist()]


def _replay_instants(rows: list[Any], events: ScoredEvents, received_us: int) -> np.ndarray:
    """Per row, the instant a replay reads its features as of: 1 µs before its event time (the event
    itself was not yet pushed when production scored it), never after the request arrived."""
    from features.window_state import event_micros

    field = events.timestamp_fields[0]
    stamps = [row.get(field) if isinstance(row, dict) else None for row in rows]
    known = [i for i, stamp in enumerate(stamps) if stamp is not None]
    out = np.full(len(rows), received_us, dtype=np.int64)
    if known:
        try:
            out[known] = event_micros([stamps[i] for i in known], field) - 1
        except EventError:  # the push after scoring reports the bad row; read as of now
            pass
    return np.minimum(out, received_us)
