"""``tidemark serve``: the scoring HTTP server of a project's models (serving/app.py) on uvicorn,
over one online store, in ``--workers`` processes on one port.

    tidemark serve [--model NAME ...] [--host 127.0.0.1] [--port 8000] [--workers N] [--refresh-s 10]
                   [--max-connections 512] [--body-timeout-s 5] [--max-in-flight 32]
    tidemark canary [--model NAME] start [--no-shadow] | step | status | rollback --reason "..." | promote

With one worker the server runs in this process. With more, uvicorn's supervisor (this process)
binds the port and starts the workers as fresh interpreters that share the listening socket; each
loads the models, follows alias moves and the canary state by itself (the state and the canary's
evidence live in Redis, so every worker counts towards the same decision) and writes its own
prediction-log files. A worker that dies is replaced; SIGTERM or Ctrl-C stops them all, each
finishing its requests and flushing its log. ``/metrics`` answers for every worker
(:mod:`serving.metrics`).
"""

from __future__ import annotations

import argparse
from pathlib import Path
from typing import Any

from tidemark.extras import require
from tidemark.settings import Settings

#: ``tidemark serve``'s port unless ``--port`` says otherwise: not Airflow's 8080 nor MLflow's 5000,
#: so that the three run side by side on one machine with their defaults.
DEFAULT_PORT = 8000
#: ``tidemark canary step``'s exit code when the look rolled the challenger back (2: an error).
ROLLED_BACK = 3


def add_serving_commands(commands: Any) -> None:
    """Add ``serve`` to the CLI's subparsers."""
    serve = commands.add_parser("serve", help="serve models' predictions over HTTP (champion, challenger canary)")
    serve.add_argument("--model", "--model-name", dest="model_names", action="append", default=None, metavar="NAME",
                       help="a registered model to serve; repeat for several (default: every model of the project, "
                            "the first being /v1/predict's; without --repo: $TIDEMARK_MODEL_NAME, else "
                            "fraud-detector)")
    serve.add_argument("--host", default="127.0.0.1")
    serve.add_argument("--port", type=int, default=DEFAULT_PORT,
                       help=f"default {DEFAULT_PORT} (Airflow's UI takes 8080, MLflow's 5000)")
    serve.add_argument("--workers", type=_positive_int, default=None, metavar="N",
                       help="server processes on the port (default: the CPU cores this process may use); "
                            "each loads the models, so memory grows with N")
    serve.add_argument("--refresh-s", type=float, default=10.0,
                       help="how often to check the registry's aliases for a new version")
    serve.add_argument("--max-rows", type=int, default=1_000, help="rows per request at most")
    serve.add_argument("--max-connections", type=int, default=512,
                       help="open connections per worker at most: past it requests get a 503 at once, and 64 "
                            "more connections are closed unanswered")
    serve.add_argument("--body-timeout-s", type=float, default=5.0,
                       help="seconds a request's head, and then its body, may take to arrive (408 after)")
    serve.add_argument("--max-in-flight", type=int, default=32,
                       help="requests scored on worker threads at once (GPU, or a slow online store); "
                            "past it, a 503 at once")
    serve.add_argument("--torch-threads", type=int, default=None,
                       help="intra-op threads of a CPU model (default 1: requests are small and run side by "
                            "side; a thread pool per forward pass costs more than it saves)")
    serve.add_argument("--replay", action="store_true",
                       help="serve a replay of recorded traffic: a model that pushes its scored events reads each "
                            "row's stream windows as of the row's own event time, not now (exact back to a "
                            "quarter of the longest window); never for live traffic")
    serve.set_defaults(run=_serve)

    canary = commands.add_parser("canary", help="champion-challenger canary: start, step, status, rollback, promote")
    canary.add_argument("--model", "--model-name", dest="model_name", default=None,
                        help="the registered model (default: $TIDEMARK_MODEL_NAME, else fraud-detector)")
    actions = canary.add_subparsers(required=True, metavar="ACTION")
    begin = actions.add_parser("start", help="start a canary of the challenger (shadow first)")
    begin.add_argument("--no-shadow", action="store_true", help="skip shadow mode: start at 5 %%")
    begin.set_defaults(run=_canary_start)
    look = actions.add_parser("step", help=f"one controller look: advance, hold or roll back (exit code "
                                            f"{ROLLED_BACK} when it rolls back)")
    look.add_argument("--json", action="store_true", help="print the outcome as one JSON object")
    look.set_defaults(run=_canary_step)
    show = actions.add_parser("status", help="the canary state the servers route by")
    show.add_argument("--json", action="store_true", help="print the state as one JSON object")
    show.set_defaults(run=_canary_status)
    back = actions.add_parser("rollback", help="send every row to the champion again")
    back.add_argument("--reason", default="manual")
    back.set_defaults(run=_canary_rollback)
    actions.add_parser("promote", help="promote the challenger now (gate must have passed)").set_defaults(
        run=_canary_promote)


def _served_models(settings: Settings, requested: list[str] | None) -> list[str]:
    """The models ``tidemark serve`` serves: those named (each checked against the project), else
    every model of the project, in its file's order."""
    from pipelines.project import load_project, model_names

    if not requested:
        return model_names(settings)
    if settings.feast_repo is not None:
        project = load_project(settings.feast_repo)
        for name in requested:
            project.model(name)  # a name the project lacks: its error, with near matches
    return list(dict.fromkeys(requested))


def push_scored(settings: Settings, names: list[str]) -> dict[str, str]:
    """The push source of each of ``names`` whose project entry declares ``push_scored_events``
    (the project ``settings`` select: a team's ``--repo``, else the bundled example)."""
    from pipelines.errors import ProjectError
    from pipelines.project import project_model

    out = {}
    for name in names:
        try:
            model = project_model(settings, name)
        except ProjectError:  # a registered model the project does not declare: it pushes nothing
            continue
        if model.push_scored_events:
            out[name] = model.push_scored_events
    return out


#: The environment variable that hands ``tidemark serve``'s options to its worker processes.
WORKER_ENV = "TIDEMARK_SERVE_WORKER"


def _positive_int(text: str) -> int:
    value = int(text)
    if value < 1:
        raise argparse.ArgumentTypeError(f"must be at least 1, got {value}")
    return value


def _serve(settings: Settings, args: argparse.Namespace) -> int:
    import json
    import os

    require("uvicorn", "serving", "tidemark serve")
    import uvicorn

    names = _served_models(settings, args.model_names)
    options = {"models": names, "refresh_s": args.refresh_s, "max_rows": args.max_rows,
               "body_timeout_s": args.body_timeout_s, "max_in_flight": args.max_in_flight,
               "max_connections": args.max_connections, "torch_threads": args.torch_threads, "replay": args.replay}
    workers = args.workers or len(os.sched_getaffinity(0))
    # log_config=None: uvicorn's loggers go through the root handlers, whose filter redacts credentials
    common = {"host": args.host, "port": args.port, "log_level": "warning", "access_log": False, "log_config": None,
              "limit_concurrency": args.max_connections, "timeout_keep_alive": 5}
    if workers == 1:
        from serving.http_protocol import guarded_protocol

        server = _start_server(settings, options)
        print(f"on http://{args.host}:{args.port} (OpenAPI at /openapi.json)", flush=True)
        uvicorn.run(server.app, http=guarded_protocol(head_timeout_s=args.body_timeout_s,
                                                      max_connections=args.max_connections), **common)
        return 0
    from serving.metrics import use_multiprocess_dir

    use_multiprocess_dir(settings.home / "serve" / f"metrics-{args.port}")  # the spawned workers inherit it
    os.environ[WORKER_ENV] = json.dumps({**options, "repo": str(settings.feast_repo or ""), "verbose": args.verbose})
    print(f"on http://{args.host}:{args.port} with {workers} workers (OpenAPI at /openapi.json)", flush=True)
    uvicorn.run("pipelines.cli_serving:worker_app", factory=True, workers=workers,
                http="serving.http_protocol:GuardedHttpToolsProtocol", **common)
    return 0


def worker_app() -> Any:
    """The ASGI app of one ``tidemark serve`` worker process (uvicorn's factory), from the options
    the supervisor left in ``$TIDEMARK_SERVE_WORKER``."""
    import dataclasses
    import json
    import os

    from pipelines.cli import configure_logging
    from serving.http_protocol import GuardedHttpToolsProtocol

    options = json.loads(os.environ[WORKER_ENV])
    configure_logging(verbose=options.pop("verbose"))
    settings = Settings.from_env()
    if options["repo"]:
        settings = dataclasses.replace(settings, feast_repo=Path(options["repo"]))
    settings.secure_home(process_umask=True)
    GuardedHttpToolsProtocol.limit(head_timeout_s=options["body_timeout_s"], max_connections=options["max_connections"])
    return _start_server(settings, options, worker=f"worker {os.getpid()}: ").app


def _start_server(settings: Settings, options: dict[str, Any], worker: str = "") -> Any:
    """Load ``options["models"]`` and start their refresh: one process's :class:`serving.server.Server`."""
    import dataclasses
    import gc

    import torch

    from pipelines.canary import CanaryAdmin
    from serving.app import ApiLimits
    from serving.server import build_server

    names = options["models"]
    settings = dataclasses.replace(settings, model_name=names[0])
    limits = ApiLimits(max_rows=options["max_rows"], body_timeout_s=options["body_timeout_s"],
                       max_in_flight=options["max_in_flight"])
    admins = {name: CanaryAdmin(dataclasses.replace(settings, model_name=name)) for name in names}
    server = build_server(settings, models=names, refresh_s=options["refresh_s"], limits=limits, admin=admins,
                          torch_threads=options["torch_threads"] or (None if torch.cuda.is_available() else 1),
                          push_scored=push_scored(settings, names), replay=options["replay"])
    # What start-up loaded (MLflow, Feast, torch) lives as long as the process: keep it out of the
    # collector's full passes, which otherwise stall requests for tens of milliseconds.
    gc.collect()
    gc.freeze()
    server.start_refresh()
    for name, served in server.models.items():
        champion = served.slots.get("champion")
        print(f"{worker}serving {name} {'v' + champion.version if champion else '(no champion yet: /readyz is false)'} "
              f"at POST /v1/models/{name}/predict{' and /v1/predict' if name == server.default else ''}", flush=True)
    return server


def _show(state: Any) -> str:
    if state.mode == "off":
        return f"{state.model}: no canary running (champion only)"
    return (f"{state.model}: {state.mode} {state.weight_pct:g}% to challenger v{state.challenger_version} "
            f"(champion v{state.champion_version}), step {state.step} since {state.step_started_at}, "
            f"canary {state.canary_id}")


def _canary_start(settings: Settings, args: argparse.Namespace) -> int:
    from pipelines.canary import start

    print(_show(start(_for_model(settings, args), shadow=not args.no_shadow)))
    return 0


def _canary_step(settings: Settings, args: argparse.Namespace) -> int:
    """One look; exit code ``ROLLED_BACK`` when it rolled the challenger back, so that a script or a
    CI job stops there."""
    import json

    from pipelines.canary import step

    outcome = step(_for_model(settings, args))
    if args.json:
        print(json.dumps({"action": outcome.action, "reasons": outcome.reasons, "notes": outcome.notes,
                          "evidence": outcome.evidence, "state": _state_dict(outcome.state)}, default=str))
    else:
        print(f"{outcome.action}: " + "; ".join(outcome.reasons))
        print(_show(outcome.state))
    return ROLLED_BACK if outcome.action == "rollback" else 0


def _canary_status(settings: Settings, args: argparse.Namespace) -> int:
    import json

    from pipelines.canary import status

    state = status(_for_model(settings, args))
    print(json.dumps(_state_dict(state)) if args.json else _show(state))
    return 0


def _state_dict(state: Any) -> dict[str, Any]:
    """The canary state as the JSON the servers store (``CanaryState``'s fields)."""
    import dataclasses

    return dataclasses.asdict(state)


def _canary_rollback(settings: Settings, args: argparse.Namespace) -> int:
    from pipelines.canary import rollback

    print(_show(rollback(_for_model(settings, args), args.reason)))
    return 0


def _canary_promote(settings: Settings, args: argparse.Namespace) -> int:
    from pipelines.canary import promote_now

    print(_show(promote_now(_for_model(settings, args))))
    return 0


def _for_model(settings: Settings, args: argparse.Namespace) -> Settings:
    """``settings`` for the model named with ``--model`` (or a project's only model)."""
    import dataclasses

    from pipelines.cli_models import model_name

    return dataclasses.replace(settings, model_name=model_name(settings, args))
