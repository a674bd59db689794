"""The raw predict path of serving/app.py: its 200 is the bytes and headers that Starlette's
JSONResponse sends, and predict paths are recognised as Starlette's router recognises them."""

from __future__ import annotations

import asyncio
from typing import Any

from starlette.responses import JSONResponse

from serving.app import _JSON, _route_path, _ServingApp


def _sent(response: Any) -> list[dict[str, Any]]:
    messages: list[dict[str, Any]] = []

    async def send(message: dict[str, Any]) -> None:
        messages.append(message)

    async def receive() -> dict[str, Any]:
        return {"type": "http.disconnect"}

    asyncio.run(response({"type": "http", "method": "POST"}, receive, send))
    return messages


def test_the_answer_is_what_json_response_sends() -> None:
    content = {"request_id": "r-1", "model": "fraud", "predictions": [
        {"score": 0.1234567890123, "variant": "champion", "model_version": "3", "features_found": True,
         "text": "é€ \u2028"}]}
    ours = _sent(_JSON(content, "r-1"))
    theirs = _sent(JSONResponse(content, headers={"x-request-id": "r-1"}))
    assert ours == theirs


def test_predict_paths_as_the_router_matches_them() -> None:
    app = _ServingApp(lambda *_: None, "default", routes=[])  # type: ignore[arg-type, return-value]
    assert app._model("/v1/predict") == "default"
    assert app._model("/v1/models/fraud-detector/predict") == "fraud-detector"
    for other in ("/v1/predict/", "/v1/models//predict", "/v1/models/a/b/predict", "/v1/models/a/predict/x",
                  "/v1/push", "/healthz"):
        assert app._model(other) is None, other
    assert _route_path({"path": "/api/v1/predict", "root_path": "/api"}) == "/v1/predict"
    assert _route_path({"path": "/v1/predict", "root_path": ""}) == "/v1/predict"
