"""The OpenAPI 3.1 document of the serving API (:mod:`serving.app`): every served model's request
rows and predictions as its champion's model contract has them, the push of events, the health,
metrics and canary endpoints, and their error answers."""

from __future__ import annotations

from collections.abc import Collection, Mapping
from typing import TYPE_CHECKING, Any, Final

from serving.request_rows import RowSchema

if TYPE_CHECKING:
    from serving.app import ApiLimits
    from serving.model_contract import ModelContract

__all__ = ["openapi_spec"]


def openapi_spec(models: Mapping[str, tuple[RowSchema, ModelContract | None]], limits: ApiLimits, *,
                 push_sources: Mapping[str, Mapping[str, str]] | None = None,
                 pushing: Collection[str] = ()) -> dict[str, Any]:
    """The OpenAPI 3.1 document of this API: for each served model (by name; the first is the
    default, ``/v1/predict``), request rows and predictions as its champion's model contract has
    them (join keys, request fields, optional label row ids; the task's prediction), with
    ``pushed`` for the models in ``pushing`` (they push their scored events); ``POST /v1/push``
    for ``push_sources`` (each with the fields its rows must carry: ``EventPusher.row_fields``)."""
    failures = _failures((400, "not JSON"), (404, "no such model on this server"),
                         (408, "the body did not arrive within the deadline"),
                         (413, "body too large"), (415, "the body is not declared as application/json"),
                         (422, "invalid rows, or an x-request-id that is not 1-128 printable ASCII characters"),
                         (503, "the online store is unavailable, no model is ready, or the server is at capacity"))
    request_id = {"name": "x-request-id", "in": "header", "required": False,
                  "description": "your id for the request: echoed, and stored with every logged row",
                  "schema": {"type": "string", "minLength": 1, "maxLength": limits.max_request_id,
                             "pattern": "^[!-~]+$"}}

    def operation(name: str, operation_id: str) -> dict[str, Any]:
        schema, contract = models[name]
        row, prediction = _row_schema(schema), _prediction_schema(contract)
        return {"post": {
            "operationId": operation_id, "summary": f"predict with {name}", "parameters": [request_id],
            "requestBody": {"required": True, "content": {"application/json": {"schema": {
                "type": "object", "required": ["rows"], "properties": {"rows": {
                    "type": "array", "minItems": 1, "maxItems": limits.max_rows, "items": row}}}}}},
            "responses": {"200": _ok({"type": "object", "properties": {
                "request_id": {"type": "string"}, "model": {"type": "string", "const": name},
                "predictions": {"type": "array", "items": prediction}, **_pushed(name in pushing)}}), **failures}}}

    names = list(models)
    return {
        "openapi": "3.1.0",
        "info": {"title": f"tidemark serving: {', '.join(names)}", "version": "1"},
        "paths": {
            "/v1/predict": operation(names[0], "predict"),
            **{f"/v1/models/{name}/predict": operation(name, f"predict_{_operation_suffix(name)}") for name in names},
            "/healthz": {"get": {"operationId": "healthz", "responses": {"200": _ok({"type": "object"})}}},
            "/readyz": {"get": {"operationId": "readyz", "responses": {
                "200": _ok({"type": "object"}), "503": {"description": "not ready"}}}},
            "/metrics": {"get": {"operationId": "metrics", "responses": {"200": {"description": "Prometheus text"}}}},
            "/openapi.json": {"get": {"operationId": "openapi", "responses": {"200": _ok({"type": "object"})}}},
            "/v1/push": _push_path(push_sources or {}, limits.max_rows),
            **_canary_paths(names),
        },
        "components": {"securitySchemes": {"bearerAuth": {
            "type": "http", "scheme": "bearer",
            "description": "the server's TIDEMARK_ADMIN_TOKEN; with none configured, canary writes and "
                           "pushes are off (403)"}}},
    }


def _row_schema(schema: RowSchema) -> dict[str, Any]:
    int64 = {"type": "integer", "format": "int64", "minimum": -(2**63), "maximum": 2**63 - 1}
    props: dict[str, Any] = {k: dict(int64) if kind == "int" else {"type": "string", "minLength": 1, "maxLength": 200}
                             for k, kind in schema.join_keys}
    for column in schema.request_columns:
        props[column] = ({"type": ["string", "null"], "maxLength": 200} if column in schema.text
                         else {"type": ["number", "null"]})
    for column in schema.passthrough:
        props[column] = {**int64, "type": ["integer", "null"],
                         "description": "optional: the label source's row id, stored with the logged prediction"}
    return {"type": "object", "required": list(schema.required), "properties": props}


def _prediction_schema(contract: ModelContract | None) -> dict[str, Any]:
    task = contract.task if contract else "binary"
    answer: dict[str, Any] = ({"score": {"type": "number", "description": "P(positive class)"}} if task == "binary" else
                              {"value": {"type": "number"}} if task == "regression" else
                              {"predicted_class": {"type": "string"}, "probabilities": {"type": "object"}})
    return {"type": "object", "properties": {
        **answer, "variant": {"type": "string", "enum": ["champion", "challenger"]},
        "model_version": {"type": "string"}, "features_found": {"type": "boolean"}}}


def _pushed(pushes: bool) -> dict[str, Any]:
    """The ``pushed`` field of a model that pushes its scored events (``push_scored_events``)."""
    if not pushes:
        return {}
    return {"pushed": {"type": "boolean", "description": (
        "whether the request's rows were pushed as events to the model's push source before this answer "
        "(the entity's next request sees them). false: the push failed (online store down, or a row "
        "lacking what the stream views need); the predictions are valid, the failure is logged and counted "
        "in tidemark_push_errors_total{model,reason}")}}


#: ``POST /v1/push``'s error answers.
_PUSH_FAILURES = ((400, "not JSON"), (401, "no or wrong bearer token"),
                  (403, "pushes are disabled: the server has no TIDEMARK_ADMIN_TOKEN"),
                  (404, "no stream feature view reads this push source"),
                  (408, "the body did not arrive within the deadline"), (413, "body too large"),
                  (415, "the body is not declared as application/json"),
                  (422, "a bad row (its loc names the row and the column); nothing of the push was stored"),
                  (503, "the online store is unavailable, or the server is at capacity"))


_PUSH_FIELD: Final[dict[str, dict[str, Any]]] = {
    "int": {"type": "integer", "minimum": -(2**63), "maximum": 2**63 - 1},
    "str": {"type": "string"},
    "time": {"oneOf": [{"type": "string", "format": "date-time"}, {"type": "integer"}],
             "description": "the event time: ISO 8601 text, or integer microseconds since the epoch (UTC); "
                            "at most 5 minutes ahead of the server's clock"},
    "id": {"type": ["integer", "string"], "description": "the event id: an event counts once per id"},
    "number": {"type": "number"},
}


def _push_path(push_sources: Mapping[str, Mapping[str, str]], max_rows: int) -> dict[str, Any]:
    """``POST /v1/push``: events into the stream feature views that read a push source; with the
    sources known, one body schema per source, its rows' fields required and typed."""
    value = {"type": ["number", "string", "boolean", "null"]}
    description = ("one event: the views' join keys, event time (ISO 8601 text or integer microseconds since "
                   "the epoch, UTC), event id (the view's tidemark.event_id tag) and aggregated columns")

    def body(source: dict[str, Any], fields: Mapping[str, str] | None) -> dict[str, Any]:
        row: dict[str, Any] = {"type": "object", "additionalProperties": value, "description": description}
        if fields:
            row |= {"required": list(fields), "properties": {f: _PUSH_FIELD[kind] for f, kind in fields.items()}}
        return {"type": "object", "required": ["push_source", "rows"], "properties": {
            "push_source": source, "rows": {"type": "array", "minItems": 1, "maxItems": max_rows, "items": row}}}

    named = {"type": "string", "minLength": 1, "maxLength": 200,
             "description": "a Feast PushSource that stream feature views read"}
    schema = ({"oneOf": [body({"type": "string", "const": s}, fields) for s, fields in push_sources.items()]}
              if push_sources else body(named, None))
    counts = {"type": "object", "properties": {k: {"type": "integer", "minimum": 0}
                                               for k in ("added", "duplicates", "expired")}}
    return {"post": {
        "operationId": "push", "security": [{"bearerAuth": []}],
        "summary": "push events to every stream feature view that reads a push source (idempotent by event id)",
        "requestBody": {"required": True, "content": {"application/json": {"schema": schema}}},
        "responses": {"200": _ok({"type": "object", "properties": {"views": {
            "type": "object", "additionalProperties": counts,
            "description": "per stream view: events added, replays of stored ids, events already out of "
                           "every window"}}}), **_failures(*_PUSH_FAILURES)}}}


def _operation_suffix(name: str) -> str:
    return "".join(c if c.isalnum() else "_" for c in name)


#: The canary endpoints' error answers: who may call, and what the controller said.
_CANARY_FAILURES = ((400, "not JSON"), (401, "no or wrong bearer token"),
                    (403, "canary writes are disabled: the server has no TIDEMARK_ADMIN_TOKEN"),
                    (404, "no canary controller attached, or an unknown action"),
                    (408, "the body did not arrive within the deadline"),
                    (409, "the controller refused: no challenger, gate not passed, no canary running, ..."),
                    (413, "body too large"), (415, "a body not declared as application/json"),
                    (422, "the body is not {\"shadow\": bool} or {\"reason\": str}"),
                    (503, "Redis or MLflow failed under the controller"))


def _canary_paths(names: list[str]) -> dict[str, Any]:
    """``GET /v1/canary`` and ``POST /v1/canary/{action}`` (the default model's), and the same
    under ``/v1/models/{name}`` for each served model (bearer token)."""
    state = {"type": "object", "description": "the canary state (or, for step, the outcome and the state)"}
    body = {"type": "object", "properties": {
        "shadow": {"type": "boolean", "default": True,
                   "description": "start only: shadow first (true) or straight to 5 % (false)"},
        "reason": {"type": "string", "description": "rollback only: recorded on the challenger version"}}}
    action = {"name": "action", "in": "path", "required": True,
              "schema": {"type": "string", "enum": ["start", "step", "rollback", "promote"]}}
    model = {"name": "name", "in": "path", "required": True, "schema": {"type": "string", "enum": names}}

    def status(operation_id: str, more: list[dict[str, Any]]) -> dict[str, Any]:
        return {"get": {
            "operationId": operation_id, "security": [{"bearerAuth": []}], "parameters": more,
            "description": "the canary state; open (no token) on a server with no TIDEMARK_ADMIN_TOKEN",
            "responses": {"200": _ok(state), **_failures(*(f for f in _CANARY_FAILURES if f[0] in (401, 404, 503)))}}}

    def act(operation_id: str, more: list[dict[str, Any]]) -> dict[str, Any]:
        return {"post": {
            "operationId": operation_id, "security": [{"bearerAuth": []}], "parameters": [*more, action],
            "requestBody": {"required": False, "content": {"application/json": {"schema": body}}},
            "responses": {"200": _ok(state), **_failures(*_CANARY_FAILURES)}}}

    return {"/v1/canary": status("canaryStatus", []), "/v1/canary/{action}": act("canaryAction", []),
            "/v1/models/{name}/canary": status("modelCanaryStatus", [model]),
            "/v1/models/{name}/canary/{action}": act("modelCanaryAction", [model])}


def _ok(schema: dict[str, Any]) -> dict[str, Any]:
    return {"description": "OK", "content": {"application/json": {"schema": schema}}}


def _failures(*codes: tuple[int, str]) -> dict[str, Any]:
    """Error responses, each ``{"detail": [{"loc": [...], "msg": "..."}]}``."""
    error = {"type": "object", "properties": {"detail": {}}}
    return {str(code): {"description": text, "content": {"application/json": {"schema": error}}}
            for code, text in codes}
