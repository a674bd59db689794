"""The one place tidemark talks to Redis for online features: connections, timeouts, errors.

Works against a single Redis and against Redis Cluster. A read or a write is split per cluster
node; every node's commands are sent before any reply is read, so a call costs one round trip
however many nodes it touches. Failures become :class:`OnlineStoreUnavailable` within the
configured timeout; the next call reconnects. Nothing is retried behind the caller's back, except
once after the cluster moved slots (MOVED/ASK) or a node lost the write script (NOSCRIPT).
"""

from __future__ import annotations

import logging
import threading
import time
from collections import defaultdict
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any, Final, cast

import numpy as np
import redis
from redis.backoff import NoBackoff
from redis.cluster import RedisCluster
from redis.crc import key_slot
from redis.exceptions import AskError, NoScriptError, TryAgainError
from redis.retry import Retry

from features.circuit_breaker import BreakerPolicy, CircuitBreaker
from features.errors import ConfigError, OnlineStoreError, OnlineStoreUnavailable
from features.redaction import redact, redact_url
from features.redis_scripts import PUSH_SCRIPT, WRITE_SCRIPT

__all__ = ["WRITE_STATUS", "RedisOnline", "WrongType"]

log = logging.getLogger(__name__)

WRITE_STATUS: Final = {1: "written", 0: "unchanged", 2: "skipped_older", -1: "refused"}
_WRITE_CHUNK: Final = 512


@dataclass
class _Batch:
    """Commands for one node, with the positions of the keys they cover."""

    client: redis.Redis
    commands: list[tuple[Any, ...]]
    positions: list[list[int]]


class RedisOnline:
    """A connection to the Redis (or Redis Cluster) that holds packed online values."""

    def __init__(self, url: str, *, timeout_ms: int = 50, write_timeout_ms: int = 10_000,
                 cluster: bool | None = None) -> None:
        """``timeout_ms`` bounds reads, ``write_timeout_ms`` writes and scans; ``cluster`` None
        asks the server whether it is a cluster node."""
        self.url = url
        self.timeout_ms = timeout_ms
        self.write_timeout_ms = write_timeout_ms
        self._cluster_hint = cluster
        self._reader: redis.Redis | RedisCluster | None = None
        self._writer: redis.Redis | RedisCluster | None = None
        self._script_shas: dict[str, str] = {}  # script source -> its SHA1 on the server
        self._lock = threading.Lock()  # materialization shares one instance across threads
        self._stale_topology = False   # a cluster node failed: refresh the slot map first
        self.breaker: CircuitBreaker | None = None  # see use_breaker()

    # -- connections ---------------------------------------------------------------------------

    def _client(self, timeout_ms: int) -> redis.Redis | RedisCluster:
        kwargs: dict[str, Any] = {"socket_timeout": timeout_ms / 1000,
                                  "socket_connect_timeout": timeout_ms / 1000,
                                  "retry": Retry(NoBackoff(), 0), "retry_on_timeout": False}
        if self._is_cluster(timeout_ms):
            return RedisCluster.from_url(self.url, **kwargs)
        return redis.Redis.from_url(self.url, **kwargs)

    def _is_cluster(self, timeout_ms: int) -> bool:
        """Ask the server once (within the caller's timeout) unless configured."""
        if self._cluster_hint is None:
            probe = redis.Redis.from_url(self.url, socket_timeout=timeout_ms / 1000,
                                         socket_connect_timeout=timeout_ms / 1000,
                                         retry=Retry(NoBackoff(), 0))
            try:
                info = cast(dict[str, Any], probe.info("cluster"))
            finally:
                probe.close()
            self._cluster_hint = bool(info.get("cluster_enabled"))
        return self._cluster_hint

    @property
    def is_cluster(self) -> bool:
        """Whether the server is a Redis Cluster node (asked once)."""
        with self.translated("connect"):
            return self._is_cluster(self.write_timeout_ms)

    @property
    def reader(self) -> redis.Redis | RedisCluster:
        """The client for reads (``timeout_ms``), connected on first use."""
        return self._connected("_reader", "read", self.timeout_ms)

    @property
    def writer(self) -> redis.Redis | RedisCluster:
        """The client for writes and scans (``write_timeout_ms``), connected on first use."""
        return self._connected("_writer", "write", self.write_timeout_ms)

    def _connected(self, attribute: str, what: str, timeout_ms: int) -> redis.Redis | RedisCluster:
        client = getattr(self, attribute)
        if client is None:
            with self._lock, self.translated(what):
                client = getattr(self, attribute) or self._client(timeout_ms)
                setattr(self, attribute, client)
        return self._refreshed(client)

    def _refreshed(self, client: redis.Redis | RedisCluster) -> redis.Redis | RedisCluster:
        """After a node failed (a failover?), reload the cluster's slot map before using it."""
        if self._stale_topology and isinstance(client, RedisCluster):
            with self.translated("read"):
                client.nodes_manager.initialize()
            self._stale_topology = False
        return client

    def close(self) -> None:
        """Close every connection (the next call reconnects)."""
        for client in (self._reader, self._writer):
            if client is not None:
                client.close()
        self._reader = self._writer = None

    def translated(self, what: str) -> _Translate:
        """A context turning connection failures during ``what`` into OnlineStoreUnavailable."""
        return _Translate(self, what)

    # -- reads ---------------------------------------------------------------------------------

    def get_many(self, keys: Sequence[bytes]) -> list[bytes | WrongType | None]:
        """The value of every key, in one round trip per node: None where the key is absent, and a
        :class:`WrongType` where it holds something other than a string (a hash, a list, …), which
        ``MGET`` alone would report as absent.

        With a :attr:`breaker` attached, a read while it is open raises
        :class:`OnlineStoreUnavailable` at once, without touching the network."""
        if not keys:
            return []
        breaker = self.breaker
        if breaker is not None and breaker.open:
            raise OnlineStoreUnavailable(
                f"Redis at {redact_url(self.url)} is unavailable ({redact(breaker.last_error)}); reads fail at "
                f"once until it answers a probe (every {breaker.policy.probe_interval_s * 1e3:.0f} ms)")
        started = time.perf_counter()
        try:
            values = self._get_many(keys)
        except OnlineStoreUnavailable as exc:
            if breaker is not None:
                breaker.record_failure(exc)
            raise
        if breaker is not None:
            breaker.record_success(time.perf_counter() - started)
        return values

    def use_breaker(self, policy: BreakerPolicy | None = None) -> CircuitBreaker:
        """Guard reads with a :class:`~features.circuit_breaker.CircuitBreaker` (the serving path
        does): after a failed read, later ones fail at once while a background thread PINGs Redis
        until it answers. Idempotent: returns the breaker already attached, if any."""
        with self._lock:
            if self.breaker is None:
                self.breaker = CircuitBreaker(self.ping, policy, name=f"Redis at {redact_url(self.url)}")
            return self.breaker

    def _get_many(self, keys: Sequence[bytes]) -> list[bytes | WrongType | None]:
        client = self.reader
        if isinstance(client, redis.Redis):  # the common case, kept lean: MGET and EXISTS in one round trip
            with self.translated("read"):
                values, existing = _mget_exists(client, keys)
                if existing > len(keys) - values.count(None):  # some "absent" keys exist: of another type
                    _mark_wrong_types(client, keys, values)
            return values
        out: list[bytes | WrongType | None] = [None] * len(keys)
        for batch, replies in self._cluster_round_trip(client, keys, lambda ks, _: ("MGET", *ks), "read"):
            for positions, reply in zip(batch.positions, replies, strict=True):
                for p, value in zip(positions, reply, strict=True):
                    out[p] = value
        absent = [i for i, v in enumerate(out) if v is None]
        if absent:  # on a cluster the type check costs a second round trip, so only for absent keys
            missing = [keys[i] for i in absent]
            for batch, replies in self._cluster_round_trip(client, missing, lambda ks, _: ("EXISTS", *ks), "read"):
                for positions, count in zip(batch.positions, replies, strict=True):
                    if not (sum(count) if isinstance(count, list) else count):  # a list: one EXISTS per key
                        continue
                    found: list[bytes | WrongType | None] = [None] * len(positions)
                    try:
                        with self.translated("read"):
                            _mark_wrong_types(cast(redis.Redis, batch.client), [missing[p] for p in positions], found)
                    except redis.ResponseError:  # the slot moves meanwhile (ASK, MOVED): absent, this time
                        continue
                    for p, value in zip(positions, found, strict=True):
                        out[absent[p]] = value
        return out

    # -- writes --------------------------------------------------------------------------------

    def write_newest(self, keys: Sequence[bytes], values: Sequence[bytes], expiry_ms: np.ndarray) -> np.ndarray:
        """Store each value unless the stored one is newer; returns a status per key
        (see :data:`WRITE_STATUS`). ``expiry_ms[i]`` > 0 sets the key's time to live."""
        if not keys:
            return np.zeros(0, dtype=np.int8)
        sha = self._load_script()

        def command(ks: list[bytes], positions: list[int]) -> tuple[Any, ...]:
            args: list[Any] = []
            for p in positions:
                args += [values[p], int(expiry_ms[p])]
            return ("EVALSHA", sha, len(ks), *ks, *args)

        status = np.zeros(len(keys), dtype=np.int8)
        for batch, replies in self._cluster_round_trip(self.writer, keys, command, "write",
                                                       chunk=_WRITE_CHUNK):
            for positions, reply in zip(batch.positions, replies, strict=True):
                status[positions] = reply
        return status

    def push_events(self, keys: Sequence[bytes], payloads: Sequence[bytes], states: Sequence[tuple[int, bytes, int]],
                    *, now_us: int, margin_ms: int) -> np.ndarray:
        """Merge each key's new event records into its window state (see
        :mod:`features.window_state`), atomically and idempotently. ``states[i]`` is key i's
        (horizon µs, state header prefix, record size): keys of several views go in one call. Returns
        int64[n, 3] per key: (added, duplicates, expired); (-1, 0, 0) where the key holds
        something else.

        On a single Redis the whole call is one EVALSHA: written entirely or not at all. On a
        cluster it is one per slot; a retry after a failure re-adds nothing already added."""
        out = np.zeros((len(keys), 3), dtype=np.int64)
        if not keys:
            return out

        def command(ks: list[bytes], positions: list[int]) -> tuple[Any, ...]:
            args: list[Any] = [int(now_us), int(margin_ms)]
            for p in positions:
                horizon, header, size = states[p]
                args += [int(horizon), header, int(size), payloads[p]]
            return ("EVALSHA", self._load_script(PUSH_SCRIPT), len(ks), *ks, *args)

        for batch, replies in self._cluster_round_trip(self.writer, keys, command, "push", script=PUSH_SCRIPT):
            for positions, reply in zip(batch.positions, replies, strict=True):
                out[positions] = np.asarray(reply, dtype=np.int64).reshape(len(positions), 3)
        return out

    def _load_script(self, source: str = WRITE_SCRIPT) -> str:
        sha = self._script_shas.get(source)
        if sha is None:
            with self.translated("write"):
                shas: Any = self.writer.script_load(source)  # a cluster loads it on every primary
                sha = str(shas if isinstance(shas, str | bytes) else next(iter(shas.values())))
            self._script_shas[source] = sha
        return sha

    # -- maintenance ---------------------------------------------------------------------------

    def delete_matching(self, pattern: bytes) -> int:
        """Delete every key matching a SCAN glob on every primary; returns how many."""
        deleted = 0
        with self.translated("delete"):
            for node in self._primaries(self.writer):
                batch: list[bytes] = []
                for key in node.scan_iter(match=pattern, count=1000):
                    batch.append(key)
                    if len(batch) >= 1000:
                        deleted += self._unlink(node, batch)
                        batch = []
                deleted += self._unlink(node, batch)
        return deleted

    @staticmethod
    def _unlink(node: redis.Redis, keys: list[bytes]) -> int:
        pipe = node.pipeline(transaction=False)
        for key in keys:  # one key per command: keys of one node may sit in different slots
            pipe.unlink(key)
        return int(sum(pipe.execute())) if keys else 0

    @staticmethod
    def _primaries(client: redis.Redis | RedisCluster) -> list[redis.Redis]:
        if isinstance(client, redis.Redis):
            return [client]
        return [node.redis_connection for node in client.get_primaries()]

    def ping(self) -> None:
        """Raise :class:`OnlineStoreUnavailable` unless every node answers."""
        with self.translated("ping"):
            for node in self._primaries(self.reader):
                node.ping()

    # -- the round trip ------------------------------------------------------------------------

    def _cluster_round_trip(
        self, client: redis.Redis | RedisCluster, keys: Sequence[bytes],
        command: Callable[[list[bytes], list[int]], tuple[Any, ...]], what: str, *, chunk: int = 0,
        script: str = WRITE_SCRIPT,
    ) -> list[tuple[_Batch, list[Any]]]:
        """Group keys by node (and by slot on a cluster), send every node's commands, then read."""
        batches = self._batches(client, keys, command, chunk)
        try:
            with self.translated(what):
                return _send_then_read(batches)
        except OnlineStoreUnavailable:
            self._stale_topology = isinstance(client, RedisCluster)
            raise
        except NoScriptError:  # a restarted or failed-over node lost the script: load it, once
            log.info("reloading the %s script after NOSCRIPT", what)
            self._script_shas.pop(script, None)
            batches = self._batches(client, keys, _with_sha(command, self._load_script(script)), chunk)
            with self.translated(what):
                return _send_then_read(batches)
        except (AskError, TryAgainError) as exc:  # slots moving (MovedError is an AskError)
            if not isinstance(client, RedisCluster):
                raise OnlineStoreError(f"Redis refused a {what}: {type(exc).__name__}: {exc}") from None
            log.info("%s during a %s: redis-py follows the redirections", type(exc).__name__, what)
            return self._one_by_one(client, keys, command, batches, what)
        except redis.ResponseError as exc:
            raise OnlineStoreError(f"Redis refused a {what}: {type(exc).__name__}: {exc}") from None

    def _one_by_one(self, client: RedisCluster, keys: Sequence[bytes],
                    command: Callable[[list[bytes], list[int]], tuple[Any, ...]], batches: list[_Batch],
                    what: str) -> list[tuple[_Batch, list[Any]]]:
        """The slow, always-correct path while the cluster reshards: one key per command through
        redis-py, which follows MOVED and ASK (with ASKING). One key, because a multi-key command
        on a slot in migration gets TRYAGAIN until the migration ends."""
        with self.translated(what):
            client.nodes_manager.initialize()
            return [(b, [[r for p in ps for r in _listed(client.execute_command(*command([keys[p]], [p])))]
                         for ps in b.positions]) for b in batches]

    @staticmethod
    def _batches(client: redis.Redis | RedisCluster, keys: Sequence[bytes],
                 command: Callable[[list[bytes], list[int]], tuple[Any, ...]], chunk: int) -> list[_Batch]:
        groups: dict[Any, list[int]] = defaultdict(list)
        if isinstance(client, redis.Redis):
            groups[None] = list(range(len(keys)))
        else:
            for i, key in enumerate(keys):
                groups[key_slot(key)].append(i)
        by_node: dict[int, _Batch] = {}
        for slot, positions in groups.items():
            node = cast(redis.Redis, client if slot is None else
                        cast(RedisCluster, client).nodes_manager.get_node_from_slot(slot).redis_connection)
            batch = by_node.setdefault(id(node), _Batch(node, [], []))
            step = chunk or len(positions)
            for start in range(0, len(positions), step):
                part = positions[start:start + step]
                batch.commands.append(command([keys[p] for p in part], part))
                batch.positions.append(part)
        return list(by_node.values())


def _send_then_read(batches: list[_Batch]) -> list[tuple[_Batch, list[Any]]]:
    """Write every node's pipeline first, then read the replies: one round trip in total."""
    conns: list[tuple[_Batch, Any]] = []
    try:
        for b in batches:  # one at a time: every connection taken is released below
            conns.append((b, b.client.connection_pool.get_connection()))
        for batch, conn in conns:
            conn.send_packed_command(conn.pack_commands(batch.commands), check_health=False)
        out = []
        error: redis.ResponseError | None = None
        for batch, conn in conns:
            replies = []
            for _ in batch.commands:
                try:
                    replies.append(conn.read_response())
                except redis.ResponseError as exc:  # keep reading: the connection stays in sync
                    error = error or exc
                    replies.append(None)
            out.append((batch, replies))
        if error is not None:
            raise error
        return out
    except BaseException:
        for _, conn in conns:
            conn.disconnect()  # a half-read connection must not be reused
        raise
    finally:
        for batch, conn in conns:
            batch.client.connection_pool.release(conn)


class WrongType:
    """What :meth:`RedisOnline.get_many` returns for a key that holds another Redis type."""

    __slots__ = ("type",)

    def __init__(self, type_name: str) -> None:
        self.type = type_name

    def __repr__(self) -> str:
        return f"WrongType({self.type!r})"


def _mget_exists(client: redis.Redis, keys: Sequence[bytes]) -> tuple[list[bytes | WrongType | None], int]:
    """``MGET keys`` and ``EXISTS keys``, pipelined on one connection: the values, and how many of
    the keys exist (a key of another type reads as absent in MGET but counts in EXISTS)."""
    pool = client.connection_pool
    conn = pool.get_connection()
    try:
        conn.send_packed_command(conn.pack_commands([("MGET", *keys), ("EXISTS", *keys)]), check_health=False)
        values = conn.read_response()
        existing = conn.read_response()
    except BaseException:
        conn.disconnect()  # a half-read connection must not be reused
        raise
    finally:
        pool.release(conn)
    return values, int(existing)


def _mark_wrong_types(client: redis.Redis, keys: Sequence[bytes], values: list[bytes | WrongType | None]) -> None:
    """Replace None by :class:`WrongType` where the key exists with another type (the rare path: a
    second round trip, only when a read found such a key)."""
    absent = [i for i, v in enumerate(values) if v is None]
    pipe = client.pipeline(transaction=False)
    for i in absent:
        pipe.type(keys[i])
    for i, kind in zip(absent, pipe.execute(), strict=True):
        name = kind.decode() if isinstance(kind, bytes) else str(kind)
        if name not in ("none", "string"):  # "string": written between the two commands, read it next time
            values[i] = WrongType(name)


def _listed(reply: Any) -> list[Any]:
    """A reply as a list: MGET and the write script answer one, EXISTS a number."""
    return reply if isinstance(reply, list) else [reply]


def _with_sha(command: Callable[[list[bytes], list[int]], tuple[Any, ...]],
              sha: str) -> Callable[[list[bytes], list[int]], tuple[Any, ...]]:
    """The same EVALSHA commands, for a script reloaded under ``sha``."""
    return lambda ks, positions: ("EVALSHA", sha, *command(ks, positions)[2:])


class _Translate:
    """Turn redis-py's connection errors into :class:`OnlineStoreUnavailable`."""

    def __init__(self, owner: RedisOnline, what: str) -> None:
        self.owner, self.what = owner, what

    def __enter__(self) -> None:
        return None

    def __exit__(self, kind: type[BaseException] | None, exc: BaseException | None, tb: object) -> None:
        if exc is None or isinstance(exc, OnlineStoreError | ConfigError):
            return
        if isinstance(exc, redis.ConnectionError | redis.TimeoutError | OSError
                      | redis.exceptions.ClusterDownError | redis.exceptions.SlotNotCoveredError):
            timeout = self.owner.timeout_ms if self.what in ("read", "ping") else self.owner.write_timeout_ms
            raise OnlineStoreUnavailable(
                f"Redis at {redact_url(self.owner.url)} failed a {self.what} (timeout {timeout} ms) "
                f"({type(exc).__name__}: {redact(str(exc))}). Check that it is running (`tidemark redis start` "
                "for the embedded one); the next call reconnects."
            ) from exc
