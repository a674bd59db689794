"""``tidemark airflow``: Airflow 3 on tidemark's home, with the four DAGs of ``pipelines/dags``.

    tidemark airflow standalone [--port 8080]   scheduler, DAG processor, API server and UI on
            [--host 127.0.0.1]                  $TIDEMARK_HOME/airflow (SQLite, LocalExecutor); the
                                                UI listens on loopback unless --host says otherwise
    tidemark airflow env                        the environment, as shell exports, for other
                                                ``airflow`` commands (``eval "$(tidemark airflow env)"``)
"""

from __future__ import annotations

import argparse
import os
import shlex
import subprocess
import sys
from pathlib import Path
from typing import Any

from tidemark.settings import Settings

DAGS_FOLDER = Path(__file__).resolve().parent / "dags"
LOOPBACK = "127.0.0.1"


def add_airflow_commands(commands: Any) -> None:
    """Add ``airflow standalone|env`` to the CLI's subparsers."""
    air = commands.add_parser("airflow", help="Airflow with the tidemark DAGs, on $TIDEMARK_HOME/airflow")
    actions = air.add_subparsers(required=True, metavar="ACTION")
    standalone = actions.add_parser("standalone", help="run Airflow (all components) in the foreground")
    standalone.add_argument("--port", type=int, default=8080, help="UI and API port")
    standalone.add_argument("--host", default=LOOPBACK,
                            help="address the UI and API listen on (default: loopback only; 0.0.0.0: every "
                                 "interface, for other machines: put TLS and a login in front)")
    standalone.set_defaults(run=_standalone)
    env = actions.add_parser("env", help="print the environment as shell exports")
    env.add_argument("--port", type=int, default=8080)
    env.add_argument("--host", default=LOOPBACK)
    env.set_defaults(run=_env)


def airflow_env(settings: Settings, port: int = 8080, host: str = LOOPBACK) -> dict[str, str]:
    """What Airflow needs to run tidemark's DAGs on this machine (added to the current environment).

    The API server (UI included) listens on ``host``: loopback by default, where Airflow's own
    default is every interface; ``airflow standalone`` starts ``airflow api-server``, whose
    ``--host`` defaults to ``[api] host`` (``AIRFLOW__API__HOST``).

    The metadata DB is ``settings.airflow_db`` (:func:`metadata_db_env`), else SQLite under
    ``$TIDEMARK_HOME/airflow``; task processes inherit ``TIDEMARK_HOME`` (absolute) and every
    other ``TIDEMARK_*`` / ``MLFLOW_*`` variable, so they see the same stores as the CLI.
    Production swaps the DB and the executor (README).
    """
    home = settings.home.resolve() / "airflow"
    return {
        "AIRFLOW_HOME": str(home),
        **metadata_db_env(settings.airflow_db or f"sqlite:///{home / 'airflow.db'}"),
        "AIRFLOW__CORE__LOAD_EXAMPLES": "False",
        "AIRFLOW__CORE__DAGS_FOLDER": str(DAGS_FOLDER),
        "AIRFLOW__CORE__PARALLELISM": "4",  # a laptop: not 32 idle workers
        "AIRFLOW__API__HOST": host,
        "AIRFLOW__API__PORT": str(port),
        "AIRFLOW__API__BASE_URL": f"http://{_url_host(host)}:{port}",
        "TIDEMARK_HOME": str(settings.home.resolve()),
        # `airflow standalone` starts its components as `airflow ...` from PATH: this environment's
        "PATH": f"{Path(sys.executable).parent}{os.pathsep}{os.environ.get('PATH', '')}",
    }


def metadata_db_env(url: str) -> dict[str, str]:
    """Airflow's metadata DB settings for ``url``.

    Airflow opens the DB twice: synchronously, and asynchronously (the API server) through a URL
    it derives from the first by swapping the driver for its default one (``asyncpg`` for
    PostgreSQL), which tidemark does not install. A PostgreSQL URL (``postgresql://``,
    ``postgres://``, ``postgresql+psycopg://``) therefore gets psycopg 3 (``tidemark[postgres]``)
    for both connections; any other URL (SQLite: ``aiosqlite`` ships with Airflow) is passed as is
    and Airflow derives the async one.
    """
    scheme, sep, rest = url.partition("://")
    if sep and scheme in ("postgres", "postgresql", "postgresql+psycopg"):
        psycopg = f"postgresql+psycopg://{rest}"
        return {"AIRFLOW__DATABASE__SQL_ALCHEMY_CONN": psycopg,
                "AIRFLOW__DATABASE__SQL_ALCHEMY_CONN_ASYNC": psycopg}
    return {"AIRFLOW__DATABASE__SQL_ALCHEMY_CONN": url}


def _url_host(host: str) -> str:
    """How this machine's browser and task processes reach an API server listening on ``host``."""
    if host in (LOOPBACK, "localhost", "0.0.0.0", "::", ""):
        return "localhost"
    return f"[{host}]" if ":" in host else host


def _standalone(settings: Settings, args: argparse.Namespace) -> int:
    env = airflow_env(settings, args.port, args.host)
    Path(env["AIRFLOW_HOME"]).mkdir(parents=True, exist_ok=True)
    print(f"Airflow on {env['AIRFLOW__API__BASE_URL']}, listening on {args.host} (home {env['AIRFLOW_HOME']}, DAGs {DAGS_FOLDER}).\n"
          f"User admin; its password is printed below and kept in "
          f"{env['AIRFLOW_HOME']}/simple_auth_manager_passwords.json.generated. DAGs start paused: "
          "unpause them in the UI. Ctrl-C stops it.", flush=True)
    return subprocess.call([str(Path(sys.executable).parent / "airflow"), "standalone"], env={**os.environ, **env})


def _env(settings: Settings, args: argparse.Namespace) -> int:
    for key, value in airflow_env(settings, args.port, args.host).items():
        print(f"export {key}={shlex.quote(value)}")
    return 0
