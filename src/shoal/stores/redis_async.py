"""Redis for an event loop: ``redis.asyncio``, the sync store's scripts and parsing.

Every URL ``RedisStore`` accepts (standalone, unix socket, Sentinel, Cluster,
TLS) and the same query parameters, read by the same code
(``_redis_protocol``): the same Lua scripts by the same SHA, the same key
layout, arguments and reply parsing, the same timeouts (the socket timeout
bounds every command), the same retries (connection errors of idempotent
calls only), the same errors (``StoreUnavailable``, the cause chained). A
request costs the same round trips: a lock-free load is one HGETALL (the
LOAD script only when a touch is due), a save one EVALSHA.

What differs is only how a command travels: awaited on the running loop.
Lease waiters subscribe to the same ``<key>:free`` channel the sync store
publishes on, and await the message.

Loop binding: redis.asyncio connections belong to one loop, so the store
keeps one client (pool) per running loop, made there on first use
(``_loopbound.PerLoop``); a manager awaited from two loops holds two pools.
Fork: a child process never uses the parent's clients.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Callable, Sequence
from dataclasses import dataclass
from typing import Any, TypeVar

import redis.asyncio
import redis.asyncio.cluster
import redis.asyncio.retry
import redis.asyncio.sentinel
from redis.exceptions import ConnectionError as RedisConnectionError
from redis.exceptions import NoScriptError, ResponseError

from . import _redis_protocol as proto
from ._loopbound import PerLoop, aclose_all
from ._redis_alane import AsyncLane
from ._redis_protocol import DEFAULT_GRACE, DEFAULT_PREFIX, ERRORS, SCAN_COUNT, SCRIPTS
from ._url import mask_url
from .base import (
    ApplyResult,
    Change,
    Ended,
    LoadResult,
    LockRequest,
    NewRecord,
    RecordInfo,
    RecordKey,
    Touch,
)

__all__ = ["AsyncRedisStore"]

T = TypeVar("T")

# redis-py's asyncio classes, for the one ``proto.topology`` that makes clients.
ASYNC = proto.Flavour(
    blocking_pool=redis.asyncio.BlockingConnectionPool,
    redis=redis.asyncio.Redis,
    sentinel=redis.asyncio.sentinel.Sentinel,
    cluster=redis.asyncio.cluster.RedisCluster,
    cluster_node=redis.asyncio.cluster.ClusterNode,
    retry=redis.asyncio.retry.Retry,
)


# Concurrent admin calls (records, purge) per step on a Cluster.
_FANOUT = 32


@dataclass(frozen=True, slots=True)
class _Client:
    """One loop's client, its lane (None on a Cluster), and what closes with it."""

    redis: Any  # redis.asyncio.Redis or RedisCluster (partly typed in redis-py)
    lane: AsyncLane | None  # the session commands, on the client's pooled connections
    also_close: Sequence[Any]

    async def aclose(self) -> None:
        if self.lane is not None:
            await self.lane.give_back()
        for client in (self.redis, *self.also_close):
            try:
                await client.aclose()
            except ERRORS:
                pass  # closing sockets of a server that is gone: nothing to release


async def _no_pause(_error: BaseException) -> None:
    """redis-py's retry calls this between attempts; the backoff does the waiting."""


class AsyncRedisStore:
    """Sessions as Redis hashes, awaited; see the module docs.

    ``connect`` makes the clients of one loop (called once per running loop);
    ``cluster`` says whether they are a Cluster's.
    """

    def __init__(
        self,
        connect: Callable[[], proto.Topology],
        *,
        url: str = "redis://",
        cluster: bool = False,
        prefix: str = DEFAULT_PREFIX,
        grace: float = DEFAULT_GRACE,
        retries: int = 2,
        sharded_pubsub: bool | None = None,
    ) -> None:
        self.url = mask_url(url)
        sharded = cluster if sharded_pubsub is None else sharded_pubsub
        self._layout = proto.Layout(prefix=prefix, grace=grace, sharded=sharded)
        self.prefix = self._layout.prefix
        self.grace = self._layout.grace
        self._cluster = cluster
        self._retries = retries
        self._retry = proto.retry_policy(redis.asyncio.retry.Retry, retries)

        def per_loop() -> _Client:
            made = connect()
            client = made.make()
            # A Cluster client routes each key to its node: it keeps its own path.
            lane = None if cluster else AsyncLane(client.connection_pool)
            return _Client(client, lane, made.also_close)

        self._clients = PerLoop(per_loop)

    @classmethod
    def from_url(cls, url: str) -> AsyncRedisStore:
        store_opts, plan = proto.from_url(url)
        return cls(
            lambda: proto.topology(plan, ASYNC),
            url=url,
            cluster=plan.kind == "cluster",
            **store_opts,
        )

    def __repr__(self) -> str:
        return f"<AsyncRedisStore {self.url!r} prefix={self.prefix!r}>"

    # -- plumbing -----------------------------------------------------------

    async def _pool_client(self) -> Any:
        """The client, for a call that takes the pool's connections itself (pub/sub, SCAN)."""
        made = self._clients.get()
        if made.lane is not None:
            await made.lane.give_back()  # so the lane's idle connections cannot starve the pool
        return made.redis

    async def _script(self, name: str, key: str, args: Sequence[Any], *, idempotent: bool = False) -> Any:
        """One EVALSHA of script ``name``: one round trip (two more the first time a server sees it)."""
        return await self._call(lambda: self._evalsha(name, key, args), idempotent=idempotent)

    async def _evalsha(self, name: str, key: str, args: Sequence[Any]) -> Any:
        text, sha = SCRIPTS[name]
        made = self._clients.get()
        lane = made.lane
        if lane is not None:
            try:
                return await lane.call("EVALSHA", sha, 1, key, *args)
            except NoScriptError:  # once per server (and after SCRIPT FLUSH)
                await lane.call("SCRIPT", "LOAD", text)
                return await lane.call("EVALSHA", sha, 1, key, *args)
        client = made.redis
        try:
            return await client.evalsha(sha, 1, key, *args)
        except NoScriptError:
            await client.script_load(text)
            return await client.evalsha(sha, 1, key, *args)

    async def _hgetall(self, name: str) -> dict[bytes, bytes]:
        """The record hash's fields (empty when absent): one HGETALL, one round trip."""
        made = self._clients.get()
        if made.lane is not None:
            return proto.fields_of(await made.lane.call("HGETALL", name))
        return proto.fields_of(await made.redis.hgetall(name))

    async def _call(self, do: Callable[[], Any], *, idempotent: bool = False) -> Any:
        """Await ``do()``; redis errors become StoreUnavailable, idempotent calls retried.

        The same rule as the sync store's ``_call``: only connection errors of
        calls that are safe to repeat are retried, never a timeout.
        """
        try:
            return await do()
        except ERRORS as exc:
            if not (isinstance(exc, RedisConnectionError) and idempotent and self._retries):
                raise proto.unavailable(self.url, exc) from exc
        try:
            return await self._retry.call_with_retry(do, _no_pause)
        except ERRORS as exc:
            raise proto.unavailable(self.url, exc) from exc

    # -- the contract -------------------------------------------------------

    async def load(
        self,
        key: RecordKey,
        *,
        now: float,
        touch: Touch | None = None,
        lock: LockRequest | None = None,
    ) -> LoadResult:
        name = self._layout.key(key)
        if lock is None:
            found = await self._call(lambda: self._hgetall(name), idempotent=True)
            done = proto.loaded_from_hash(found, now, touch)
            if done is not None:
                return done
        args = self._layout.load_args(now, touch, lock)
        return proto.load_reply(await self._script("load", name, args, idempotent=True))

    async def create(
        self, key: RecordKey, record: NewRecord, *, now: float, lock: LockRequest | None = None
    ) -> bool:
        args = self._layout.create_args(record, now, lock)
        return bool(await self._script("create", self._layout.key(key), args))

    async def apply(self, key: RecordKey, change: Change, *, now: float) -> ApplyResult:
        args = self._layout.apply_args(change, now)
        return proto.apply_reply(await self._script("apply", self._layout.key(key), args))

    async def invalidate(
        self, key: RecordKey, *, now: float, lease_token: str | None = None
    ) -> bool:
        args = self._layout.invalidate_args(now, lease_token)
        return bool(await self._script("invalidate", self._layout.key(key), args))

    async def delete(self, key: RecordKey) -> bool:
        args = [self._layout.publish]
        return bool(await self._script("delete", self._layout.key(key), args))

    async def unlock(self, key: RecordKey, token: str) -> None:
        args = self._layout.unlock_args(token)
        await self._script("unlock", self._layout.key(key), args, idempotent=True)

    async def renew(self, key: RecordKey, token: str, *, now: float, lease: float) -> bool:
        args = self._layout.renew_args(token, now, lease)
        return bool(await self._script("renew", self._layout.key(key), args, idempotent=True))

    async def wait_unlocked(self, key: RecordKey, timeout: float) -> None:
        """Await a message on the record's ``<key>:free`` channel, up to ``timeout``.

        As the sync store: subscribe first, then look at the lease once more
        (a lease freed between the caller's load and the subscription has
        published already), then await the release's message.
        """
        loop = asyncio.get_running_loop()
        deadline = loop.time() + max(0.0, timeout)
        name = self._layout.key(key)
        channel = self._layout.channel(name)
        client = await self._pool_client()
        sharded = self._layout.publish == "SPUBLISH"
        pubsub = client.pubsub()
        # A Cluster's shard channels are read per node (redis-py's ClusterPubSub).
        node = client.get_node_from_key(channel) if self._cluster and sharded else None

        async def until(kinds: Sequence[str]) -> bool:
            while (remaining := deadline - loop.time()) > 0:
                if node is not None:
                    message = await pubsub.get_sharded_message(timeout=remaining, target_node=node)
                else:
                    message = await pubsub.get_message(timeout=remaining)
                if message is not None and message["type"] in kinds:
                    return True
            return False

        try:
            try:
                await (pubsub.ssubscribe(channel) if sharded else pubsub.subscribe(channel))
                if await until(self._layout.kinds) and await client.hexists(name, "lt"):
                    await until(("message", "smessage"))
            finally:
                await pubsub.aclose()
        except ERRORS as exc:
            raise proto.unavailable(self.url, exc) from exc

    async def _batches(self, pattern: str) -> AsyncIterator[list[bytes]]:
        """Keys matching ``pattern`` on every master, in batches of about SCAN_COUNT."""
        batch: list[bytes] = []
        client = await self._pool_client()
        async for raw in client.scan_iter(match=pattern, count=SCAN_COUNT):
            batch.append(raw)
            if len(batch) >= SCAN_COUNT:
                yield batch
                batch = []
        if batch:
            yield batch

    async def _each(self, keys: Sequence[bytes], queue: Callable[[Any, bytes], Any]) -> list[Any]:
        """``queue(client, key)`` per key, per-key errors returned in place.

        One pipelined round trip; on a Cluster (whose pipelines refuse
        EVALSHA) concurrent calls instead, ``_FANOUT`` at a time so no node's
        connection limit is reached.
        """
        client = await self._pool_client()
        if not self._cluster:
            pipe = client.pipeline(transaction=False)
            for k in keys:
                queue(pipe, k)
            replies: list[Any] = await pipe.execute(raise_on_error=False)
            return replies
        out: list[Any] = []
        for start in range(0, len(keys), _FANOUT):
            chunk = keys[start : start + _FANOUT]
            out += await asyncio.gather(*(queue(client, k) for k in chunk), return_exceptions=True)
        for reply in out:
            # An error reply stays in place (as in a pipeline); a lost server does not.
            if isinstance(reply, BaseException) and not isinstance(reply, ResponseError):
                raise reply
        return out

    async def _loaded(self, text: str) -> str:
        """The SHA of ``text``, loaded on every master (for pipelined EVALSHA)."""
        client = await self._pool_client()
        sha: str = await client.script_load(text)
        return sha

    async def records(self, app_id: str | None = None) -> list[RecordInfo]:
        listed: list[RecordInfo] = []
        try:
            sha = await self._loaded(SCRIPTS["info"][0])
            async for keys in self._batches(self._layout.pattern(app_id)):
                replies = await self._each(keys, lambda pipe, k: pipe.evalsha(sha, 1, k))
                for raw, reply in zip(keys, replies):
                    row = proto.info(self._layout, raw, reply, app_id)
                    if row is not None:
                        listed.append(row)
        except ERRORS as exc:
            raise proto.unavailable(self.url, exc) from exc
        return listed

    async def purge(self, *, now: float, grace: float, limit: int = 1000) -> int:
        """As the sync store's ``purge``: candidates by SCAN, each re-checked by PURGE."""
        gone = await self._purged(
            SCRIPTS["purge"][0], now, grace, limit, lambda raw, r: raw if r == 1 else None
        )
        return len(gone)

    async def purge_ended(self, *, now: float, grace: float, limit: int = 1000) -> list[Ended]:
        """As the sync store's ``purge_ended``."""
        from ..cluster._statements import REDIS_PURGE_RETURNING

        layout = self._layout
        return await self._purged(
            REDIS_PURGE_RETURNING, now, grace, limit, lambda raw, r: proto.ended(layout, raw, r)
        )

    async def _purged(
        self, text: str, now: float, grace: float, limit: int, done: Callable[[bytes, Any], T | None]
    ) -> list[T]:
        out: list[T] = []
        args = self._layout.purge_args(now, grace)
        try:
            sha = await self._loaded(text)
            async for keys in self._batches(self._layout.pattern()):
                if len(out) >= limit:
                    break
                expiries = await self._each(keys, lambda pipe, k: pipe.hget(k, "exp"))
                room = limit - len(out)
                doomed = proto.purgeable(keys, expiries, now=now, grace=grace, room=room)
                if doomed:
                    replies = await self._each(doomed, lambda p, k: p.evalsha(sha, 1, k, *args))
                    out += [d for d in map(done, doomed, replies) if d is not None]
        except ERRORS as exc:
            raise proto.unavailable(self.url, exc) from exc
        return out

    async def aclose(self) -> None:
        """Close this loop's pool (and, on their loops, other loops' pools)."""
        await aclose_all(self._clients, _Client.aclose)

