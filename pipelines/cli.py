"""The ``tidemark`` command line.

    tidemark datagen [ARGS]       the project's data generator (``datagen`` in its tidemark.yaml)
    tidemark features build [--start 2026-01-01 --end 2026-01-31]
    tidemark features list
    tidemark features materialize [--start 2026-11-01T00:00] [--end 2026-11-21T12:00] [--views a,b]
    tidemark features stream --push-source S --landing DIR --checkpoint DIR [--once] [--format parquet|json]
    tidemark redis start|stop|status
    tidemark train | gate | promote [--first] | rollback | models | mlflow-ui   (pipelines/cli_models.py)
    tidemark serve                                                             (pipelines/cli_serving.py)
    tidemark airflow standalone|env                                            (pipelines/cli_airflow.py)
    tidemark demo [ARGS]          the project's demo (``demo`` in its tidemark.yaml)

Settings come from ``TIDEMARK_*`` environment variables, read once here.
"""

from __future__ import annotations

import argparse
import dataclasses
import logging
import sys
from collections.abc import Sequence
from datetime import UTC, date, datetime
from pathlib import Path

from features.redaction import RedactingFilter, redact, redact_url
from pipelines.cli_airflow import add_airflow_commands
from pipelines.cli_models import _utc_time, add_model_commands
from pipelines.cli_serving import add_serving_commands
from tidemark.errors import TidemarkError
from tidemark.settings import Settings


def configure_logging(*, verbose: bool) -> None:
    """The CLI's log format and level, and no password of a URL in any log line, whoever logs it
    (also in ``tidemark serve``'s worker processes, which start as fresh interpreters)."""
    logging.basicConfig(level=logging.INFO if verbose else logging.WARNING,
                        format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    for handler in logging.getLogger().handlers:
        handler.addFilter(RedactingFilter())


def main(argv: Sequence[str] | None = None) -> int:
    """Run the CLI; returns the process exit code (2 for a tidemark error, with its message)."""
    parser = _parser()
    args, extra = parser.parse_known_args(argv)
    if extra and not getattr(args, "passthrough", False):
        parser.error(f"unrecognized arguments: {' '.join(extra)}")
    args.extra = extra
    configure_logging(verbose=args.verbose)
    settings = Settings.from_env()
    if args.repo is not None:
        settings = dataclasses.replace(settings, feast_repo=args.repo.expanduser().resolve())
    try:
        settings.secure_home(process_umask=True)  # one policy for every file under home: private unless configured
        return int(args.run(settings, args) or 0)
    except TidemarkError as exc:
        print(f"tidemark: error: {redact(str(exc))}", file=sys.stderr)
        return 2
    except Exception as exc:
        if type(exc).__module__.startswith("mlflow."):  # checked by name: importing mlflow here costs seconds
            print(f"tidemark: MLflow error: {redact(str(exc))}\n(tracking store {redact_url(settings.tracking_uri)}; set "
                  "MLFLOW_TRACKING_URI to change it)", file=sys.stderr)
            return 2
        raise


def _version() -> str:
    """The installed distribution's version (the source tree's, for an editable install)."""
    from importlib.metadata import PackageNotFoundError, version

    try:
        return version("tidemark")
    except PackageNotFoundError:  # run from a source tree that was never installed
        return "unknown (not installed: run `make install`)"


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="tidemark", description=__doc__.split("\n\n")[0])
    parser.add_argument("-v", "--verbose", action="store_true", help="log progress")
    parser.add_argument("--version", action="version", version=f"%(prog)s {_version()}")
    parser.add_argument("--repo", type=Path, default=None,
                        help="a team's project: a Feast repo with tidemark.yaml (default: $TIDEMARK_FEAST_REPO, "
                             "else the bundled fraud example)")
    commands = parser.add_subparsers(required=True, metavar="COMMAND")

    # the project's own commands, with their own options (`tidemark datagen --help` is the project's)
    for name, what in (("datagen", "generate the project's raw data (the bundled example: card payments)"),
                       ("demo", "the project's demo (the bundled example: the whole loop, on a home of its own)")):
        own = commands.add_parser(name, help=what, add_help=False)
        own.set_defaults(run=_project_command, command=name, passthrough=True)

    feats = commands.add_parser("features", help="feature tables and definitions")
    feat_cmds = feats.add_subparsers(required=True, metavar="ACTION")
    build = feat_cmds.add_parser("build", help="compute offline feature tables on Spark")
    build.add_argument("--start", type=date.fromisoformat, default=None, help="first day (UTC), inclusive")
    build.add_argument("--end", type=date.fromisoformat, default=None, help="last day (UTC), inclusive")
    build.set_defaults(run=_features_build)
    listing = feat_cmds.add_parser("list", help="list registered feature references")
    listing.set_defaults(run=_features_list)
    mat = feat_cmds.add_parser("materialize", help="move the latest feature values to the online store (Redis)")
    mat.add_argument("--start", type=_utc_time, default=None,
                     help="event times from (UTC, ISO 8601); omitted: from where the last run ended")
    mat.add_argument("--end", type=_utc_time, default=None, help="event times up to (UTC; default now)")
    mat.add_argument("--views", type=lambda s: [v for v in s.split(",") if v], default=None,
                     help="comma-separated feature views (default: all)")
    mat.set_defaults(run=_features_materialize)
    stream = feat_cmds.add_parser("stream", help="push a push source's landing files into its stream views' "
                                  "online state (Spark Structured Streaming; resumes from its checkpoint)")
    stream.add_argument("--push-source", required=True, help="the Feast PushSource whose stream views get the events")
    stream.add_argument("--landing", required=True, help="the folder (or URI) where event files land")
    stream.add_argument("--checkpoint", required=True,
                        help="Spark's checkpoint folder: a restart resumes after the last committed batch; "
                             "refused events go to its rejected/ folder")
    stream.add_argument("--format", dest="file_format", choices=("parquet", "json"), default="parquet",
                        help="the landing files' format (JSON: one event object per line)")
    stream.add_argument("--once", action="store_true",
                        help="process the files there now and stop (Spark's availableNow trigger)")
    stream.add_argument("--max-files-per-trigger", type=int, default=1_000, help="files per micro-batch at most")
    stream.add_argument("--trigger-s", type=float, default=2.0, help="seconds between micro-batches (without --once)")
    stream.set_defaults(run=_features_stream)

    red = commands.add_parser("redis", help="the embedded online store (a redis-server under $TIDEMARK_HOME)")
    red_cmds = red.add_subparsers(required=True, metavar="ACTION")
    red_cmds.add_parser("start", help="start it (if not running) and print its URL").set_defaults(run=_redis_start)
    red_cmds.add_parser("stop", help="shut it down (its data stays on disk)").set_defaults(run=_redis_stop)
    red_cmds.add_parser("status", help="print its URL, or 'not running'").set_defaults(run=_redis_status)

    add_model_commands(commands)
    add_serving_commands(commands)
    add_airflow_commands(commands)

    return parser


def _project_command(settings: Settings, args: argparse.Namespace) -> int:
    """``tidemark datagen|demo ARGS``: the project's entry point of that name, given ARGS."""
    from pipelines.project import PROJECT_FILE, settings_project

    command = settings_project(settings).hook(args.command)
    if command is None:
        print(f"tidemark: {settings.project_repo / PROJECT_FILE} declares no {args.command} entry point",
              file=sys.stderr)
        return 2
    return int(command(settings, list(args.extra)) or 0)


def _features_build(settings: Settings, args: argparse.Namespace) -> int:
    from pipelines.project import settings_project

    build = settings_project(settings).hook("build")
    if build is None:
        print(f"{settings.project_repo} declares no feature_jobs.build in tidemark.yaml: nothing to build")
        return 0
    print(build(settings, args.start, args.end, checks=False).table())
    return 0


def _features_list(settings: Settings, args: argparse.Namespace) -> int:
    from features.sdk import FeatureClient

    for ref in FeatureClient(settings).feature_references():
        print(ref)
    return 0


def _features_materialize(settings: Settings, args: argparse.Namespace) -> int:
    from features.sdk import FeatureClient

    client = FeatureClient(settings)
    end = args.end or datetime.now(UTC)
    if args.start is None:
        results = client.materialize_incremental(end, views=args.views)
    else:
        results = client.materialize(args.start, end, views=args.views)
    for r in results:
        resumed = f", {r.resumed_partitions} of {r.partitions} partitions resumed" if r.resumed_partitions else ""
        print(f"{r.view:<20} {r.window.start:%Y-%m-%d %H:%M} → {r.window.end:%Y-%m-%d %H:%M}: {r.counts}{resumed}")
    return 0


def _features_stream(settings: Settings, args: argparse.Namespace) -> int:
    from features.sdk import FeatureClient
    from features.stream_job import StreamTotals, run_stream

    client = FeatureClient(settings)

    def progress(batch_id: int, totals: StreamTotals) -> None:
        print(f"batch {batch_id}: {totals.rows:,} events so far; added {sum(totals.added.values()):,}, replays "
              f"{sum(totals.duplicates.values()):,}, already out of every window {sum(totals.expired.values()):,}, "
              f"refused {totals.rejected:,}", flush=True)

    totals = run_stream(client.spark, client.event_pusher(), args.push_source, args.landing, args.checkpoint,
                        file_format=args.file_format, once=args.once, max_files_per_trigger=args.max_files_per_trigger,
                        trigger_s=args.trigger_s, on_batch=progress)
    for view in sorted(totals.added):
        print(f"{view:<20} added {totals.added[view]:,}, replays {totals.duplicates[view]:,}, "
              f"expired {totals.expired[view]:,}")
    return 0


def _redis_start(settings: Settings, args: argparse.Namespace) -> int:
    if settings.redis_url:
        print(f"TIDEMARK_REDIS_URL is set ({redact_url(settings.redis_url)}); tidemark does not manage that Redis")
        return 0
    from features.embedded_redis import EmbeddedRedis

    print(EmbeddedRedis(settings.redis_dir).ensure_running())
    return 0


def _redis_stop(settings: Settings, args: argparse.Namespace) -> int:
    if settings.redis_url:
        print(f"TIDEMARK_REDIS_URL is set ({redact_url(settings.redis_url)}); tidemark does not manage that Redis")
        return 0
    from features.embedded_redis import EmbeddedRedis

    stopped = EmbeddedRedis(settings.redis_dir).stop()
    print(f"stopped the redis-server in {settings.redis_dir}" if stopped else "not running")
    return 0


def _redis_status(settings: Settings, args: argparse.Namespace) -> int:
    if settings.redis_url:
        print(f"{redact_url(settings.redis_url)} (external, from TIDEMARK_REDIS_URL)")
        return 0
    from features.embedded_redis import EmbeddedRedis

    print(EmbeddedRedis(settings.redis_dir).url() or "not running")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
