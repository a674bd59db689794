"""``tidemark serve``: the fraud-scoring HTTP server (serving/app.py) on uvicorn.

    tidemark serve [--host 127.0.0.1] [--port 8080] [--refresh-s 10]
"""

from __future__ import annotations

import argparse
from typing import Any

from features.settings import Settings


def add_serving_commands(commands: Any) -> None:
    """Add ``serve`` to the CLI's subparsers."""
    serve = commands.add_parser("serve", help="serve fraud scores over HTTP (champion, challenger canary)")
    serve.add_argument("--host", default="127.0.0.1")
    serve.add_argument("--port", type=int, default=8080)
    serve.add_argument("--refresh-s", type=float, default=10.0,
                       help="how often to check the registry's aliases for a new version")
    serve.add_argument("--max-rows", type=int, default=1_000, help="rows per request at most")
    serve.set_defaults(run=_serve)


def _serve(settings: Settings, args: argparse.Namespace) -> int:
    import uvicorn

    from serving.app import ApiLimits
    from serving.server import build_server

    server = build_server(settings, refresh_s=args.refresh_s, limits=ApiLimits(max_rows=args.max_rows))
    server.start_refresh()
    champion = server.slots.get("champion")
    print(f"serving {settings.model_name} "
          f"{'v' + champion.version if champion else '(no champion yet: /readyz is false)'} "
          f"on http://{args.host}:{args.port} (OpenAPI at /openapi.json)")
    uvicorn.run(server.app, host=args.host, port=args.port, log_level="warning", access_log=False)
    return 0
