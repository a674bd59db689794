"""Reads of packed online values on redis-py's asyncio client, for Feast's async path.

Feast's feature server and ``FeatureStore.get_online_features_async`` await
``OnlineStore.online_read_async``; a blocking read there would stall the event loop for every
request in flight. This module fetches the same values as :meth:`RedisOnline.get_many` (``None``
for an absent key, :class:`~features.redis_client.WrongType` for a key of another Redis type)
without blocking; decoding stays in :func:`features.online_views.read_batch`, shared with the
synchronous read.

An asyncio connection belongs to the event loop that opened it, so clients are kept per loop
(a loop that ends takes its clients with it) and opened on first use in that loop.
"""

from __future__ import annotations

import asyncio
import weakref
from collections.abc import Sequence
from typing import Any

import redis.asyncio as aioredis
from redis.asyncio.cluster import RedisCluster as AsyncRedisCluster
from redis.backoff import NoBackoff
from redis.retry import Retry

from features.redis_client import RedisOnline, WrongType

__all__ = ["close_async_clients", "get_many_async"]

_Client = aioredis.Redis | AsyncRedisCluster
_clients: weakref.WeakKeyDictionary[asyncio.AbstractEventLoop, dict[str, _Client]] = weakref.WeakKeyDictionary()


async def get_many_async(online: RedisOnline, keys: Sequence[bytes]) -> list[bytes | WrongType | None]:
    """The value of every key, as :meth:`RedisOnline.get_many` returns them, without blocking.

    Fails with :class:`~features.errors.OnlineStoreUnavailable` within ``online.timeout_ms`` as the
    synchronous read does; with a circuit breaker attached and open, fails at once.
    """
    if not keys:
        return []
    breaker = online.breaker
    if breaker is not None and breaker.open:
        return online.get_many(keys)  # raises at once, with the breaker's message
    with online.translated("read"):
        client = _client(online)
        if isinstance(client, AsyncRedisCluster):
            values: list[Any] = list(await client.mget_nonatomic(list(keys)))
            existing = len(keys) if None in values else 0  # a cluster cannot EXISTS across slots
        else:
            pipe = client.pipeline(transaction=False)
            pipe.mget(list(keys))
            pipe.exists(*keys)
            values, existing = await pipe.execute()
            values = list(values)
        if existing > len(keys) - values.count(None):  # some "absent" keys exist: of another type
            await _mark_wrong_types(client, keys, values)
    return values


async def close_async_clients() -> None:
    """Close the clients opened in the running event loop (the next read reopens them)."""
    opened = _clients.pop(asyncio.get_running_loop(), {})
    for client in opened.values():
        await client.aclose()


def _client(online: RedisOnline) -> _Client:
    loop = asyncio.get_running_loop()
    per_loop = _clients.setdefault(loop, {})
    client = per_loop.get(online.url)
    if client is None:
        timeout_s = online.timeout_ms / 1000
        kwargs: dict[str, Any] = {"socket_timeout": timeout_s, "socket_connect_timeout": timeout_s,
                                  "retry": Retry(NoBackoff(), 0)}
        # is_cluster asks the server once, synchronously, then remembers: a one-off cost per process.
        if online.is_cluster:
            client = AsyncRedisCluster.from_url(online.url, **kwargs)
        else:
            client = aioredis.Redis.from_url(online.url, retry_on_timeout=False, **kwargs)
        per_loop[online.url] = client
    return client


async def _mark_wrong_types(client: _Client, keys: Sequence[bytes], values: list[Any]) -> None:
    """Replace None by :class:`WrongType` where the key exists with another type (rare)."""
    absent = [i for i, v in enumerate(values) if v is None]
    kinds = [await client.type(keys[i]) for i in absent] if isinstance(client, AsyncRedisCluster) \
        else await _types_pipelined(client, [keys[i] for i in absent])
    for i, kind in zip(absent, kinds, strict=True):
        name = kind.decode() if isinstance(kind, bytes) else str(kind)
        if name not in ("none", "string"):  # "string": written between the two commands
            values[i] = WrongType(name)


async def _types_pipelined(client: aioredis.Redis, keys: Sequence[bytes]) -> list[Any]:
    pipe = client.pipeline(transaction=False)
    for key in keys:
        pipe.type(key)
    return list(await pipe.execute())
