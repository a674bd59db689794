"""``tidemark`` commands for models: train, gate, promote, rollback, models, mlflow-ui.

    tidemark train [--cutoff 2026-11-01T00:00] [--window-days 60] [--seed 0] [--device auto]
    tidemark gate [--version 3]
    tidemark promote [--version 3] [--first]
    tidemark rollback [--reason "p99 latency SLO"]
    tidemark models [--json]
    tidemark models history [--model NAME] [--json]
    tidemark drift [--start 2026-11-20T13:00 --end 2026-11-20T14:00] [--json]
    tidemark mlflow-ui [--port 5000]
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import time
from datetime import UTC, datetime, timedelta
from typing import Any

from features.redaction import redact_url
from tidemark.settings import Settings

GATE_FAILED = 3  # `tidemark gate` exit code for a verdict of fail (2: an error, 1: a crash)


def add_model_commands(commands: Any) -> None:
    """Add the model commands to the CLI's subparsers."""
    train = commands.add_parser("train", help="train a model (a project's, by its entry point; else the fraud "
                                             "example) and register it as the challenger")
    train.add_argument("--cutoff", type=_utc_time, default=None,
                       help="labels known by this time (UTC; default: the newest payment)")
    train.add_argument("--window-days", type=float, default=None, help="train on the last N days (default: all)")
    train.add_argument("--maturity-days", type=float, default=30.0,
                       help="leave out payments younger than this at the cutoff (labels still arriving)")
    train.add_argument("--seed", type=int, default=0)
    train.add_argument("--epochs", type=int, default=20)
    train.add_argument("--max-rows", type=int, default=None, help="train on a uniform sample of this many rows")
    train.add_argument("--device", default="auto", help="auto (CUDA when available), cpu or cuda")
    train.add_argument("--model", "--model-name", dest="model_name", default=None, help="registered model (default: $TIDEMARK_MODEL_NAME "
                                                          "or fraud-detector)")
    train.set_defaults(run=_train)

    gate = commands.add_parser("gate", help="judge the challenger against the champion on recent labels")
    gate.add_argument("--version", default=None, help="version to judge (default: the challenger)")
    gate.add_argument("--cutoff", type=_utc_time, default=None, help="labels known by (UTC; default: newest)")
    gate.add_argument("--maturity-days", type=float, default=None,
                      help="judge payments at least this old at the cutoff (default: the runs' label maturity)")
    gate.add_argument("--model", "--model-name", dest="model_name", default=None)
    gate.set_defaults(run=_gate)

    promote = commands.add_parser("promote", help="make the challenger (or --version) the champion")
    promote.add_argument("--version", default=None)
    promote.add_argument("--first", action="store_true", help="the model's first champion (no gate)")
    promote.add_argument("--model", "--model-name", dest="model_name", default=None)
    promote.set_defaults(run=_promote)

    rollback = commands.add_parser("rollback", help="point champion back at previous-champion")
    rollback.add_argument("--reason", default="manual")
    rollback.add_argument("--model", "--model-name", dest="model_name", default=None)
    rollback.set_defaults(run=_rollback)

    models = commands.add_parser("models", help="list the model's versions, aliases and metrics")
    models.add_argument("--model", "--model-name", dest="model_name", default=None)
    models.add_argument("--json", action="store_true", help="print the versions as one JSON object")
    models.set_defaults(run=_models)
    history = models.add_subparsers(dest="models_command", required=False).add_parser(
        "history", help="every alias move (champion, challenger, previous-champion), newest first")
    history.add_argument("--model", "--model-name", dest="model_name", default=None)
    history.add_argument("--json", action="store_true", help="print the moves as one JSON object")
    history.set_defaults(run=_history)

    drift = commands.add_parser("drift", help="judge an interval's prediction log against the champion's "
                                              "reference profile, as the drift_monitor DAG does")
    drift.add_argument("--start", type=_utc_time, default=None, help="UTC (default: the last whole hour's start)")
    drift.add_argument("--end", type=_utc_time, default=None, help="UTC (default: --start + 1 hour)")
    drift.add_argument("--model", "--model-name", dest="model_name", default=None)
    drift.add_argument("--json", action="store_true", help="print the decision's summary as one JSON object")
    drift.set_defaults(run=_drift)

    ui = commands.add_parser("mlflow-ui", help="start the MLflow UI on tidemark's tracking store")
    ui.add_argument("--host", default="127.0.0.1")
    ui.add_argument("--port", type=int, default=5000)
    ui.add_argument("--workers", type=int, default=1,
                    help="MLflow server processes (MLflow's own default, 4, takes minutes to start on 2 cores)")
    ui.set_defaults(run=_mlflow_ui)


def model_name(settings: Settings, args: argparse.Namespace) -> str:
    """The model a command is about: ``--model``; else a project's only model (``--repo``); else
    ``settings.model_name`` (the bundled example's ``fraud-detector``)."""
    if getattr(args, "model_name", None):
        return str(args.model_name)
    if settings.feast_repo is not None:
        from pipelines.project import load_project

        return load_project(settings.feast_repo).model(None).name
    return settings.model_name


def _train(settings: Settings, args: argparse.Namespace) -> int:
    from pipelines.project import project_model
    from pipelines.project_training import TrainRequest, train_model

    # a project's model (--repo), else the bundled example's, by the entry point its tidemark.yaml names
    name = args.model_name or (settings.model_name if settings.feast_repo is None else None)
    model = project_model(settings, name)
    request = TrainRequest(cutoff=args.cutoff, label_maturity=timedelta(days=args.maturity_days),
                           window=timedelta(days=args.window_days) if args.window_days is not None else None,
                           seed=args.seed, epochs=args.epochs, max_rows=args.max_rows, device=args.device)
    print(train_model(settings, model, request).summary())
    return 0


def _gate(settings: Settings, args: argparse.Namespace) -> int:
    from pipelines.gate import GateConfig, evaluate_gate


    maturity = timedelta(days=args.maturity_days) if args.maturity_days is not None else None
    verdict = evaluate_gate(settings, model_name=model_name(settings, args), version=args.version,
                            config=GateConfig(label_cutoff=args.cutoff, label_maturity=maturity))
    print(f"v{verdict.challenger} vs champion v{verdict.champion}: {'PASS' if verdict.passed else 'FAIL'} — "
          f"{verdict.reason}\n  window {verdict.start:%Y-%m-%d %H:%M} … {verdict.end:%Y-%m-%d %H:%M} UTC, "
          f"{verdict.rows:,} labelled rows" + (f", {verdict.positives:,} positive" if verdict.positives else ""))
    return 0 if verdict.passed else GATE_FAILED


def _promote(settings: Settings, args: argparse.Namespace) -> int:
    from pipelines import model_registry

    client = model_registry.connect(settings)
    done = model_registry.promote(client, model_name(settings, args), args.version, first=args.first)
    print(f"{done.name}: champion is v{done.champion}"
          + (f" (v{done.previous} is previous-champion)" if done.previous else ""))
    return 0


def _rollback(settings: Settings, args: argparse.Namespace) -> int:
    from pipelines import model_registry

    client = model_registry.connect(settings)
    done = model_registry.rollback(client, model_name(settings, args), reason=args.reason)
    print(f"{done.name}: champion is v{done.champion} again (v{done.previous} rolled back)")
    return 0


def _models(settings: Settings, args: argparse.Namespace) -> int:
    from pipelines import model_registry

    client = model_registry.connect(settings)
    name = model_name(settings, args)
    versions = sorted(client.search_model_versions(f"name = '{name}'"), key=lambda v: int(v.version))
    aliases: dict[str, list[str]] = {}
    for alias, number in (client.get_registered_model(name).aliases.items() if versions else ()):
        aliases.setdefault(str(number), []).append(alias)
    if args.json:
        print(json.dumps({"model": name, "tracking_uri": redact_url(settings.tracking_uri), "versions": [
            {"version": str(v.version), "aliases": sorted(aliases.get(str(v.version), [])), "run_id": v.run_id,
             "created": datetime.fromtimestamp(v.creation_timestamp / 1000, UTC).isoformat(),
             "description": v.description or "", "tags": dict(v.tags)} for v in versions]}))
        return 0
    if not versions:
        print(f"{name}: no versions; train one with `tidemark train`")
        return 0
    print(f"{name}  (tracking store {redact_url(settings.tracking_uri)})")
    print(f"  {'version':>7}  {'aliases':<28} {'val PR-AUC':>10} {'val ROC-AUC':>11}  {'gate':<5} data window")
    for v in versions:
        tags = v.tags
        print(f"  {v.version:>7}  {','.join(sorted(aliases.get(str(v.version), []))) or '-':<28} {tags.get('val_pr_auc', '-')[:8]:>10} "
              f"{tags.get('val_roc_auc', '-')[:8]:>11}  {tags.get('gate.verdict', '-'):<5} "
              f"{tags.get('data_start', '?')[:10]} … {tags.get('data_end', '?')[:10]}")
    return 0


def _history(settings: Settings, args: argparse.Namespace) -> int:
    """The model's alias history (pipelines.alias_history), newest first."""
    from pipelines import alias_history, model_registry

    client = model_registry.connect(settings)
    name = model_name(settings, args)
    moves = list(reversed(alias_history.read(client, name)))
    if args.json:
        print(json.dumps({"model": name, "moves": [m.as_dict() for m in moves]}))
        return 0
    if not moves:
        print(f"{name}: no alias moves recorded")
        return 0
    print(f"{name}: {len(moves)} alias moves, newest first")
    for m in moves:
        print(f"  #{m.seq:<4} {m.at}  {m.alias:<17} {'v' + m.version if m.version else '(deleted)':<9} "
              f"was {'v' + m.previous if m.previous else '-':<6} {m.action:<15} {m.actor}\n        {m.reason}")
    return 0


def _drift(settings: Settings, args: argparse.Namespace) -> int:
    """One drift judgement of ``[start, end)``: logged to MLflow and exported like the DAG's; the
    summary printed (the decision is in it; the exit code is 0 whatever it is)."""
    import dataclasses

    from pipelines.drift_job import monitor

    start = args.start or datetime.now(UTC).replace(minute=0, second=0, microsecond=0) - timedelta(hours=1)
    end = args.end or start + timedelta(hours=1)
    if end <= start:
        print(f"tidemark: error: --end ({end.isoformat()}) must come after --start ({start.isoformat()})",
              file=sys.stderr)
        return 2
    outcome = monitor(dataclasses.replace(settings, model_name=model_name(settings, args)), start, end)
    summary = outcome.summary()
    if args.json:
        print(json.dumps(summary))
        return 0
    print(f"{summary['model']} v{summary['champion_version']}, {summary['interval_start']} .. "
          f"{summary['interval_end']}: {summary['decision']} ({summary['rows']} rows)")
    for reason in summary["reasons"]:
        print(f"  {reason}")
    if summary["report_dir"]:
        print(f"  report: {summary['report_dir']}")
    if summary["mlflow_run_id"]:
        print(f"  MLflow: the day's run {summary['mlflow_run_id']}, files under {summary['mlflow_artifact_path']}")
    return 0


def _mlflow_ui(settings: Settings, args: argparse.Namespace) -> int:
    uri = settings.tracking_uri
    if uri.split(":", 1)[0] in {"http", "https", "databricks"}:
        print(f"MLFLOW_TRACKING_URI is {uri}, an MLflow server: open its UI instead")
        return 0
    settings.mlflow_artifacts_dir.mkdir(parents=True, exist_ok=True)
    command = [sys.executable, "-m", "mlflow", "ui", "--backend-store-uri", uri,
               "--default-artifact-root", settings.mlflow_artifacts_dir.as_uri(),
               "--host", args.host, "--port", str(args.port), "--workers", str(args.workers)]
    url = f"http://{args.host}:{args.port}"
    # Each MLflow server process imports the whole tracking server (about 30 s of CPU here)
    # before it answers: say so, and say when it does, rather than leave a dead URL.
    print(f"Starting the MLflow UI on {url} (store {redact_url(uri)}): each of its {args.workers} worker "
          "process(es) imports MLflow's server first, about 30 s on a 2-core machine. Ctrl-C stops it.", flush=True)
    proc = subprocess.Popen(command, env={**os.environ, "MLFLOW_TRACKING_URI": uri})
    started = time.monotonic()
    try:
        if _answers(url, proc):
            print(f"MLflow UI ready on {url} after {time.monotonic() - started:.0f} s", flush=True)
        return proc.wait()
    except KeyboardInterrupt:
        proc.terminate()
        return proc.wait()


def _answers(url: str, proc: subprocess.Popen[bytes], timeout_s: float = 600.0) -> bool:
    """Wait until ``url`` answers HTTP (True) or ``proc`` exits or ``timeout_s`` passes (False)."""
    import urllib.request

    deadline = time.monotonic() + timeout_s
    while proc.poll() is None and time.monotonic() < deadline:
        try:
            with urllib.request.urlopen(url + "/health", timeout=2):
                return True
        except OSError:
            time.sleep(0.5)
    return False


def _utc_time(text: str) -> datetime:
    moment = datetime.fromisoformat(text)
    return moment.replace(tzinfo=UTC) if moment.tzinfo is None else moment.astimezone(UTC)
