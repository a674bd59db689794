"""A real browser for the UI tests: headless Chromium's ``--dump-dom`` (the DOM after the page's
JavaScript ran), and the UI servers started as a person starts them, through the ``tidemark`` CLI.

No browser driver is needed: MLflow's and Airflow's UIs are single-page React apps that render
from their REST APIs, so the rendered DOM after a virtual-time budget is what a person would see.
"""

from __future__ import annotations

import html
import os
import re
import shutil
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Iterator, Mapping
from contextlib import contextmanager
from pathlib import Path

import pytest

CHROMIUM_NAMES = ("chromium", "chromium-browser", "google-chrome")


def chromium_or_skip() -> str:
    """The Chromium binary on PATH; the test is skipped, saying how to install it, when there is none."""
    for name in CHROMIUM_NAMES:
        found = shutil.which(name)
        if found:
            return found
    pytest.skip("no headless Chromium on PATH: `apt-get install -y chromium` (Debian) or `make test` as root")


def dump_dom(browser: str, url: str, *, until: str | None = None, budget_ms: int = 15_000,
             timeout_s: float = 240.0, profile: Path | None = None) -> str:
    """The DOM of ``url`` once its scripts ran for ``budget_ms`` of virtual time (milliseconds),
    as headless Chromium prints it. ``profile``: a user-data directory (default: a fresh one).

    ``until``: a text the page shows once its data arrived. Virtual time does not wait for a slow
    server (a loaded machine answers the UI's API calls late), so the page is opened again, with
    twice the budget each time, until that text is in the DOM or ``timeout_s`` has passed; the
    last DOM is returned either way, for the caller's assertions to show.
    """
    deadline = time.monotonic() + timeout_s
    while True:
        command = [browser, "--headless", "--no-sandbox", "--disable-gpu", "--disable-dev-shm-usage",
                   "--no-first-run", f"--virtual-time-budget={budget_ms}", "--dump-dom", url]
        if profile is not None:
            command.insert(1, f"--user-data-dir={profile}")
        done = subprocess.run(command, capture_output=True, text=True, timeout=timeout_s, check=False)
        assert done.returncode == 0, f"chromium exited {done.returncode} on {url}: {done.stderr[-2000:]}"
        if until is None or until in done.stdout or time.monotonic() > deadline:
            return done.stdout
        budget_ms = min(2 * budget_ms, 120_000)


def visible_text(dom: str) -> str:
    """The DOM's text with tags and scripts dropped and whitespace collapsed (what a reader sees)."""
    dom = re.sub(r"<(script|style)\b.*?</\1>", " ", dom, flags=re.DOTALL | re.IGNORECASE)
    return re.sub(r"\s+", " ", html.unescape(re.sub(r"<[^>]+>", " ", dom))).strip()


def free_port() -> int:
    """A TCP port free on loopback right now."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


@contextmanager
def cli_server(args: list[str], env: Mapping[str, str], log: Path) -> Iterator[subprocess.Popen[bytes]]:
    """``python -m pipelines.cli ARGS`` in its own process group, its output to ``log``; the whole
    group (the CLI and the servers it started) is stopped afterwards."""
    with log.open("wb") as sink:
        proc = subprocess.Popen([sys.executable, "-m", "pipelines.cli", *args], stdout=sink,
                                stderr=subprocess.STDOUT, env={**os.environ, **env}, start_new_session=True)
    try:
        yield proc
    finally:
        _stop_group(proc)


def wait_for_line(proc: subprocess.Popen[bytes], log: Path, ready: str, timeout_s: float = 240.0) -> float:
    """Wait until a line of the server's ``log`` matches the regex ``ready``; the seconds waited.
    Fails, quoting the log, when the server exits or ``timeout_s`` passes first."""
    started = time.monotonic()
    while not re.search(ready, log.read_text(errors="replace")):
        tail = log.read_text(errors="replace")[-3000:]
        assert proc.poll() is None, f"{proc.args} exited {proc.returncode}:\n{tail}"
        assert time.monotonic() - started < timeout_s, f"{proc.args} not ready in {timeout_s} s:\n{tail}"
        time.sleep(1.0)
    return time.monotonic() - started


def _stop_group(proc: subprocess.Popen[bytes], grace_s: float = 20.0) -> None:
    """SIGTERM to the process group that :func:`cli_server` started (the CLI and its servers),
    SIGKILL to what is left of it after ``grace_s`` seconds."""
    try:
        os.killpg(proc.pid, signal.SIGTERM)
        deadline = time.monotonic() + grace_s
        while time.monotonic() < deadline:
            proc.poll()  # reap the CLI, or the group never empties
            os.killpg(proc.pid, 0)  # raises once no process of the group is left
            time.sleep(0.5)
        os.killpg(proc.pid, signal.SIGKILL)
    except ProcessLookupError:
        pass
    proc.wait(timeout=10)
