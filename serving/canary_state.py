"""A canary's state, shared in Redis so that every serving replica routes the same way.

    controller ── write(new, expected_revision) ──► Redis  tidemark:canary:<model>  (JSON, one key)
                  compare-and-set in a Lua script         │
    replica ◄──── read() ◄── cached ``cache_s`` seconds ──┘  unreadable? champion only (degraded)

The request path calls :meth:`CanaryStateStore.read` on every request; it costs a Redis round trip
at most once per ``cache_s`` seconds (1 s by default), so a replica follows a change within about
that long. A replica that can't read the state (Redis down, too slow, the value corrupt) routes
champion only: :meth:`~CanaryStateStore.read` never raises, it returns ``CanaryState.off(model)``
with ``degraded=True`` and logs a warning at most once every 30 s. Writes, on the other hand, raise
:class:`~serving.errors.CanaryStateError`: a controller must know that a step did not happen.

A read is bounded by the Redis client's socket timeouts times its retries (plus its back-off);
give the store a client without retries (as :class:`features.redis_client.RedisOnline` makes) to
keep one slow Redis from holding requests up for longer than one timeout.
"""

from __future__ import annotations

import json
import logging
import math
import threading
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass, fields, replace
from datetime import datetime, timedelta
from typing import Any, ClassVar, Final, Literal, cast, get_args

import redis
from redis.cluster import RedisCluster

from serving.errors import CanaryConflictError, CanaryStateError

__all__ = ["MODES", "CanaryState", "CanaryStateStore", "Mode"]

log = logging.getLogger(__name__)

Mode = Literal["off", "shadow", "canary"]
MODES: Final[tuple[str, ...]] = get_args(Mode)

WARN_EVERY_S: Final = 30.0  # a replica that can't read the state says so at most this often

# Compare-and-set in one round trip. Replies {1, new revision} written, {0, stored revision}
# conflict, {-1, 0} the stored value is not a canary state (not JSON, no integer revision, or a
# key of another type). Revision 0 means "no state stored yet".
_CAS_SCRIPT: Final = """
local ok, cur = pcall(redis.call, 'GET', KEYS[1])
if not ok then return {-1, 0} end
local rev = 0
if cur then
  local decoded, state = pcall(cjson.decode, cur)
  if not decoded or type(state) ~= 'table' then return {-1, 0} end
  rev = state['revision']
  if type(rev) ~= 'number' or rev < 0 or rev ~= math.floor(rev) then return {-1, 0} end
end
if rev ~= tonumber(ARGV[1]) then return {0, rev} end
redis.call('SET', KEYS[1], ARGV[2])
return {1, rev + 1}
"""


@dataclass(frozen=True)
class CanaryState:
    """Where one model's canary stands. Times are UTC ISO 8601 strings (``...+00:00``), or None.

    ``weight_pct`` is the challenger's share of routing keys in percent (0–100), used in mode
    ``canary``; ``shadow`` scores every row with the challenger off the response path. ``canary_id``
    seeds :func:`serving.routing.to_challenger`, so it stays the same for one canary's steps.
    ``revision`` counts writes; the store sets it, whatever the caller passes.
    """

    model: str
    mode: Mode
    weight_pct: float = 0.0
    champion_version: str | None = None
    challenger_version: str | None = None
    canary_id: str = ""
    step: int = 0
    started_at: str | None = None
    step_started_at: str | None = None
    revision: int = 0

    _OPTIONAL_STR: ClassVar = ("champion_version", "challenger_version", "started_at", "step_started_at")

    def __post_init__(self) -> None:
        _check(isinstance(self.model, str) and self.model != "",
               f"model must be a non-empty string, got {self.model!r}")
        _check(self.mode in MODES, f"unknown mode {self.mode!r}; known: {', '.join(MODES)}")
        weight = self.weight_pct
        _check(isinstance(weight, int | float) and not isinstance(weight, bool) and 0 <= weight <= 100,
               f"weight_pct must be a number of percent in [0, 100], got {weight!r}")
        object.__setattr__(self, "weight_pct", float(weight))
        for name in self._OPTIONAL_STR:
            value = getattr(self, name)
            _check(value is None or isinstance(value, str), f"{name} must be a string or null, got {value!r}")
        _check(isinstance(self.canary_id, str), f"canary_id must be a string, got {self.canary_id!r}")
        for name in ("step", "revision"):
            value = getattr(self, name)
            _check(isinstance(value, int) and not isinstance(value, bool) and value >= 0,
                   f"{name} must be a non-negative integer, got {value!r}")
        for name in ("started_at", "step_started_at"):
            _check_utc(name, getattr(self, name))
        if self.mode != "off":
            _check(bool(self.challenger_version) and bool(self.canary_id),
                   f"mode {self.mode!r} needs a challenger_version and a canary_id, got "
                   f"{self.challenger_version!r} and {self.canary_id!r}")

    @classmethod
    def off(cls, model: str) -> CanaryState:
        """No canary: every request goes to the champion."""
        return cls(model=model, mode="off")

    def to_json(self) -> str:
        """The state as stored in Redis: one compact JSON object with every field."""
        return json.dumps(asdict(self), separators=(",", ":"))

    @classmethod
    def from_json(cls, raw: str | bytes) -> CanaryState:
        """Parse what :meth:`to_json` wrote; raises CanaryStateError unless it is exactly that shape.

        Unknown fields are refused rather than ignored: a replica that doesn't understand a field
        a newer controller wrote would route differently from its peers; it falls back instead.
        """
        try:
            data = json.loads(raw)
        except (ValueError, UnicodeDecodeError) as exc:  # JSONDecodeError is a ValueError
            raise CanaryStateError(_malformed(f"not JSON ({exc})")) from None
        if not isinstance(data, dict):
            raise CanaryStateError(_malformed(f"a JSON {type(data).__name__}, not an object"))
        names = {f.name for f in fields(cls)}
        missing, unknown = sorted(names - data.keys()), sorted(data.keys() - names)
        if missing or unknown:
            raise CanaryStateError(_malformed(f"missing fields {missing}, unknown fields {unknown}"))
        try:
            return cls(**data)
        except CanaryStateError as exc:
            raise CanaryStateError(_malformed(str(exc))) from None


def _check(condition: bool, message: str) -> None:
    if not condition:
        raise CanaryStateError(f"invalid canary state: {message}")


def _check_utc(name: str, value: str | None) -> None:
    if value is None:
        return
    try:
        parsed = datetime.fromisoformat(value)
    except ValueError:
        parsed = None
    _check(parsed is not None and parsed.utcoffset() == timedelta(0),
           f"{name} must be a UTC ISO 8601 time such as '2026-11-21T09:30:00+00:00', got {value!r}")


def _malformed(why: str) -> str:
    return (f"stored canary state is malformed: {why}. Write it through CanaryStateStore.write (the canary "
            "controller), not by hand; deleting the key turns the canary off")


@dataclass(frozen=True)
class _Cached:
    state: CanaryState
    degraded: bool
    expires_at: float  # time.monotonic() seconds


class CanaryStateStore:
    """One model's canary state in Redis: cached reads for the request path, compare-and-set writes."""

    def __init__(self, redis_client: redis.Redis | RedisCluster, model: str, *,
                 key_prefix: str = "tidemark:canary:", cache_s: float = 1.0,
                 available: Callable[[], bool] | None = None) -> None:
        """``cache_s``: how long (seconds, monotonic clock) a read is reused, degraded ones included;
        0 reads Redis on every call. ``available()`` False (the online store's circuit breaker is
        open) makes a read degraded at once, without waiting on a Redis known to be down."""
        if not isinstance(model, str) or not model:
            raise ValueError(f"model must be a registered model's name, got {model!r}")
        if not math.isfinite(cache_s) or cache_s < 0:
            raise ValueError(f"cache_s must be a finite number of seconds >= 0, got {cache_s!r}")
        self.redis = redis_client
        self.model = model
        self.key = f"{key_prefix}{model}"
        self.cache_s = cache_s
        self.available = available
        # redis-py types register_script for Redis only; RedisCluster runs the script on the key's node.
        self._cas = cast(redis.Redis, redis_client).register_script(_CAS_SCRIPT)
        self._cached: _Cached | None = None
        self._generation = 0             # bumped by invalidate(): a read in flight then isn't cached
        self._refresh = threading.Lock()  # one Redis read per expiry, however many requests wait
        self._failures = 0               # degraded reads since the last good one
        self._warned_at: float | None = None
        self._suppressed = 0

    # -- reads (request path) ------------------------------------------------------------------

    def read(self) -> tuple[CanaryState, bool]:
        """(state, degraded): the stored state, ``CanaryState.off(model)`` if none is stored, or
        ``CanaryState.off(model)`` with degraded True when it can't be read. Never raises."""
        cached = self._cached
        if cached is not None and time.monotonic() < cached.expires_at:
            return cached.state, cached.degraded
        with self._refresh:
            cached = self._cached  # another thread may have read it while this one waited
            if cached is not None and time.monotonic() < cached.expires_at:
                return cached.state, cached.degraded
            generation = self._generation
            state, degraded = self._fetch()
            if generation == self._generation:
                self._cached = _Cached(state, degraded, time.monotonic() + self.cache_s)
            return state, degraded

    def invalidate(self) -> None:
        """Forget the cached state: the next :meth:`read` asks Redis."""
        self._generation += 1
        self._cached = None

    def _fetch(self) -> tuple[CanaryState, bool]:
        if self.available is not None and not self.available():
            return self._degraded("the online store's Redis is unavailable (its circuit breaker is open)")
        try:
            raw = cast(bytes | str | None, self.redis.get(self.key))
        except Exception as exc:  # noqa: BLE001  (down, too slow, WRONGTYPE, undecodable: the request goes on)
            return self._degraded(f"Redis failed the read ({type(exc).__name__}: {exc})")
        if raw is None:
            return self._recovered(CanaryState.off(self.model))
        try:
            state = CanaryState.from_json(raw)
        except CanaryStateError as exc:
            return self._degraded(str(exc))
        if state.model != self.model:
            return self._degraded(f"the stored state is for model {state.model!r}")
        return self._recovered(state)

    def _degraded(self, why: str) -> tuple[CanaryState, bool]:
        self._failures += 1
        now = time.monotonic()
        if self._warned_at is None or now - self._warned_at >= WARN_EVERY_S:
            also = f" ({self._suppressed} more unreadable reads since the last warning)" if self._suppressed else ""
            log.warning("canary state of %r at key %r is unreadable: %s; routing champion only until it "
                        "is readable again%s", self.model, self.key, why, also,
                        extra={"canary_model": self.model, "canary_key": self.key, "degraded": True})
            self._warned_at, self._suppressed = now, 0
        else:
            self._suppressed += 1
        return CanaryState.off(self.model), True

    def _recovered(self, state: CanaryState) -> tuple[CanaryState, bool]:
        if self._failures:
            log.info("canary state of %r readable again after %d unreadable reads (mode %s)", self.model,
                     self._failures, state.mode, extra={"canary_model": self.model, "canary_key": self.key,
                                                        "degraded": False})
            self._failures, self._warned_at, self._suppressed = 0, None, 0
        return state, False

    # -- writes (controller) -------------------------------------------------------------------

    def write(self, new: CanaryState, *, expected_revision: int) -> CanaryState:
        """Store ``new`` if the stored revision is still ``expected_revision`` (0: nothing stored);
        returns what was stored, at revision ``expected_revision + 1``.

        Raises CanaryConflictError when another writer got there first (read again, decide again),
        and CanaryStateError when Redis failed or the stored value is not a canary state.
        """
        if new.model != self.model:
            raise CanaryStateError(f"this store holds the canary of {self.model!r}; got a state for "
                                   f"{new.model!r}. Use a CanaryStateStore for that model")
        if isinstance(expected_revision, bool) or not isinstance(expected_revision, int) or expected_revision < 0:
            raise ValueError(f"expected_revision must be an integer >= 0, got {expected_revision!r}")
        stored = replace(new, revision=expected_revision + 1)
        status, revision = self._compare_and_set(stored.to_json(), expected_revision)
        if status == 0:
            raise CanaryConflictError(self.model, expected_revision, revision)
        if status != 1:
            raise CanaryStateError(
                f"the value at key {self.key!r} is not a canary state (no integer revision, or not a string), "
                f"so nothing was written. Replicas route champion only meanwhile; delete the key "
                f"(`redis-cli DEL {self.key}`) and write again with expected_revision=0")
        self.invalidate()
        self._cached = _Cached(stored, False, time.monotonic() + self.cache_s)
        return stored

    def _compare_and_set(self, value: str, expected_revision: int) -> tuple[int, int]:
        try:
            reply: Any = self._cas(keys=[self.key], args=[expected_revision, value])
        except redis.ResponseError as exc:
            raise CanaryStateError(
                f"Redis refused the canary state write for {self.model!r} ({exc}); nothing was written. "
                "A read-only replica or a full Redis refuses writes: point the controller at the primary") from None
        except (redis.RedisError, OSError) as exc:
            raise CanaryStateError(
                f"Redis failed the canary state write for {self.model!r} ({type(exc).__name__}: {exc}). If the "
                "connection broke mid-call the write may have happened: read the state again (its revision "
                "tells) before retrying; replicas keep the state they last read") from None
        return int(reply[0]), int(reply[1])
