"""Redis (standalone, Sentinel, Cluster; Valkey too): every operation one Lua script.

URLs (query parameters: ``_redis_protocol.OPTIONS``; an unknown one is an error)::

    redis://[[user]:password@]host[:port][/db]        rediss:// for TLS
    unix://[[user]:password@]/path/to/redis.sock[?db=N]
    redis+sentinel://[[user]:password@]host:port[,host:port...]/service_name[/db]
    redis+cluster://[[user]:password@]host:port[,host:port...]
    (rediss+sentinel:// and rediss+cluster:// for TLS)

Each contract method is one ``EVALSHA`` of a script from ``_lua.py`` (redis-py
``Script`` objects: the script is loaded once per server on ``NOSCRIPT``), so a
load-and-lock and a save-and-unlock are one round trip each, and an unchanged
session that is not due a touch costs one. Records expire natively
(``expires + grace``, see docs/stores-redis.md); ``purge`` exists for the
contract and for admin tools and walks the keyspace with a bounded ``SCAN``.

Errors: every redis-py error becomes ``StoreUnavailable`` with the cause
chained. Connection errors (refused, reset: they fail fast) are retried with
exponential backoff only for operations that are safe to repeat (see
``_idempotent``); timeouts are never retried, so no call waits longer than
the socket timeouts it was configured with.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable, Iterator, Sequence
from operator import attrgetter
from typing import Any, TypeVar, Union

import redis
from redis.client import PubSub
from redis.cluster import ClusterNode, RedisCluster
from redis.commands.core import Script
from redis.exceptions import ConnectionError as RedisConnectionError
from redis.exceptions import NoScriptError
from redis.retry import Retry
from redis.sentinel import Sentinel

from . import _lua
from . import _redis_protocol as proto
from ._redis_lane import Lane
from ._redis_protocol import DEFAULT_GRACE, DEFAULT_PREFIX, ERRORS, SCAN_COUNT
from ._url import mask_url
from ..errors import StoreUnavailable
from .base import (
    ApplyResult,
    Ended,
    LoadResult,
    LockRequest,
    NewRecord,
    RecordInfo,
    RecordKey,
    Touch,
    Change,
)

__all__ = ["RedisStore"]

T = TypeVar("T")
Client = Union[redis.Redis, RedisCluster]

# redis-py's sync classes, for the one ``proto.topology`` that makes clients.
SYNC = proto.Flavour(
    blocking_pool=redis.BlockingConnectionPool,
    redis=redis.Redis,
    sentinel=Sentinel,
    cluster=RedisCluster,
    cluster_node=ClusterNode,
    retry=Retry,
)


class _Scripts:
    """The store's scripts registered on one client (loaded by SHA on first use)."""

    def __init__(self, client: Client) -> None:
        reg = client.register_script
        self.load = reg(_lua.LOAD)
        self.create = reg(_lua.CREATE)
        self.apply = reg(_lua.APPLY)
        self.invalidate = reg(_lua.INVALIDATE)
        self.unlock = reg(_lua.UNLOCK)
        self.renew = reg(_lua.RENEW)
        self.delete = reg(_lua.DELETE)
        self.purge = reg(_lua.PURGE)
        self.info = reg(_lua.INFO)


# Each contract method's script, as ``_run`` picks it (made once, not a
# lambda per call).
_LOAD: Callable[[_Scripts], Script] = attrgetter("load")
_CREATE: Callable[[_Scripts], Script] = attrgetter("create")
_APPLY: Callable[[_Scripts], Script] = attrgetter("apply")


class RedisStore:
    """Sessions as Redis hashes; see the module docs and ``_lua.py`` for the layout.

    ``client`` is a redis-py ``Redis`` (standalone or from a ``Sentinel``) or
    ``RedisCluster``, or a function making one on first use (``cluster`` then
    says which): a Cluster client reads the topology when it is made, and a
    store must open while its server is down, as every other store does.
    """

    def __init__(
        self,
        client: Client | Callable[[], Client],
        *,
        url: str = "redis://",
        cluster: bool = False,
        prefix: str = DEFAULT_PREFIX,
        grace: float = DEFAULT_GRACE,
        retries: int = 2,
        sharded_pubsub: bool | None = None,
        on_close: Callable[[], None] | None = None,
    ) -> None:
        self.url = mask_url(url)
        if isinstance(client, (redis.Redis, RedisCluster)):
            made = client
            self._make: Callable[[], Client] = lambda: made
            cluster = isinstance(client, RedisCluster)
        else:
            self._make = client
        sharded = cluster if sharded_pubsub is None else sharded_pubsub
        self._layout = proto.Layout(prefix=prefix, grace=grace, sharded=sharded)
        self.prefix = self._layout.prefix
        self.grace = self._layout.grace
        self._cluster = cluster
        self._ready: tuple[Client, _Scripts, Lane | None] | None = None
        self._lock = threading.Lock()
        self._on_close = on_close
        self._publish = self._layout.publish
        self._retries = retries
        self._retry = proto.retry_policy(Retry, retries)

    @classmethod
    def from_url(cls, url: str) -> RedisStore:
        store_opts, plan = proto.from_url(url)
        topology = proto.topology(plan, SYNC)
        also_close = topology.also_close

        def close() -> None:
            for client in also_close:
                client.close()

        return cls(
            topology.make,
            url=url,
            cluster=topology.cluster,
            on_close=close if also_close else None,
            **store_opts,
        )

    def __repr__(self) -> str:
        return f"<RedisStore {self.url!r} prefix={self.prefix!r}>"

    # -- plumbing -----------------------------------------------------------

    def _key(self, key: RecordKey) -> str:
        return self._layout.key(key)

    def _conn(self) -> tuple[Client, _Scripts, Lane | None]:
        """The client, its scripts and its lane (None on a Cluster), made on first use.

        The lane sends the session commands on the client's own pooled
        connections (see ``_redis_lane``). A Cluster client keeps its
        ``execute_command``: it routes each key to its slot's node and
        follows MOVED/ASK, which a single pool cannot.
        """
        ready = self._ready
        if ready is None:
            with self._lock:
                if self._ready is None:
                    client = self._make()
                    pool = None if self._cluster else getattr(client, "connection_pool", None)
                    lane = None if pool is None else Lane(pool)
                    self._ready = (client, _Scripts(client), lane)
                ready = self._ready
        return ready

    def _pool_client(self) -> Client:
        """The client, for calls that use its pool directly (pub/sub, pipelines, SCAN)."""
        client, _scripts, lane = self._conn()
        if lane is not None:
            lane.give_back()  # so the lane's idle connections cannot starve the pool
        return client

    def _call(self, do: Callable[[], T], *, idempotent: bool = False) -> T:
        """Run one store call; redis errors become StoreUnavailable.

        ``idempotent`` calls are retried on connection errors: running them
        twice with the same arguments leaves the same state and answers the
        same, so a reply lost with its connection can be asked for again.
        """
        try:
            return do()  # the fast path: no retry machinery unless needed
        except ERRORS as exc:
            return self._retried(do, exc, idempotent)

    def _retried(self, do: Callable[[], T], exc: BaseException, idempotent: bool) -> T:
        """After ``do``'s first attempt failed with ``exc``: retry it, or raise."""
        if not (isinstance(exc, RedisConnectionError) and idempotent and self._retries):
            raise self._unavailable(exc) from exc
        try:
            return self._retry.call_with_retry(do, lambda _error: None)
        except ERRORS as exc:
            raise self._unavailable(exc) from exc

    def _unavailable(self, exc: BaseException) -> StoreUnavailable:
        return proto.unavailable(self.url, exc)

    def _run(
        self,
        pick: Callable[[_Scripts], Script],
        key: str,
        args: Sequence[Any],
        *,
        idempotent: bool = False,
    ) -> Any:
        """One EVALSHA of the script ``pick`` chooses: one round trip."""
        ready = self._ready
        if ready is None or ready[2] is None:  # not connected yet, or a Cluster
            return self._call(lambda: self._evalsha(pick, key, args), idempotent=idempotent)
        # The lane's first attempt, without closures (measured: a few us a
        # call on a request's cold path). A failure goes on where _call would
        # after a first attempt, so attempts and retries count the same.
        script = pick(ready[1])
        lane = ready[2]
        try:
            return lane.call("EVALSHA", script.sha, 1, key, *args)
        except NoScriptError:  # once per server (and after SCRIPT FLUSH)
            return self._call(lambda: self._load_script(script, key, args), idempotent=idempotent)
        except ERRORS as exc:
            return self._retried(lambda: self._evalsha(pick, key, args), exc, idempotent)

    def _evalsha(self, pick: Callable[[_Scripts], Script], key: str, args: Sequence[Any]) -> Any:
        _client, scripts, lane = self._conn()
        script = pick(scripts)
        if lane is None:
            try:
                # EVALSHA directly: Script.__call__ rebuilds its argument
                # tuples on every call (measured: ~4 us a call here).
                return script.registered_client.evalsha(script.sha, 1, key, *args)
            except NoScriptError:
                return script(keys=[key], args=args)  # loads it, then EVALSHA again
        try:
            return lane.call("EVALSHA", script.sha, 1, key, *args)
        except NoScriptError:
            return self._load_script(script, key, args)

    def _load_script(self, script: Script, key: str, args: Sequence[Any]) -> Any:
        """SCRIPT LOAD on the lane's server, then the EVALSHA the server did not know."""
        lane = self._conn()[2]
        assert lane is not None
        lane.call("SCRIPT", "LOAD", script.script)
        return lane.call("EVALSHA", script.sha, 1, key, *args)

    def _hgetall(self, key: str) -> dict[bytes, bytes]:
        """The record hash's fields (empty when absent): one HGETALL, one round trip."""
        ready = self._ready
        if ready is None or ready[2] is None:
            return self._call(lambda: self._hgetall_once(key), idempotent=True)
        try:  # the lane's first attempt, without closures (see _run)
            return proto.fields_of(ready[2].call("HGETALL", key))
        except ERRORS as exc:
            return self._retried(lambda: self._hgetall_once(key), exc, True)

    def _hgetall_once(self, key: str) -> dict[bytes, bytes]:
        client, _scripts, lane = self._conn()
        if lane is None:
            found: dict[bytes, bytes] = client.hgetall(key)  # type: ignore[assignment]
            return found  # the Cluster client routes by key
        return proto.fields_of(lane.call("HGETALL", key))

    # -- the contract -------------------------------------------------------

    def load(
        self,
        key: RecordKey,
        *,
        now: float,
        touch: Touch | None = None,
        lock: LockRequest | None = None,
    ) -> LoadResult:
        name = self._layout.key(key)
        if lock is None:
            # No lease to take: a plain HGETALL, the checks in Python
            # (proto.loaded_from_hash says why).
            done = proto.loaded_from_hash(self._hgetall(name), now, touch)
            if done is not None:
                return done
        # Idempotent even with a touch and a lease: a repeat with the same
        # ``now`` finds the touch done and the lease its own (re-entrant).
        args = self._layout.load_args(now, touch, lock)
        return proto.load_reply(self._run(_LOAD, name, args, idempotent=True))

    def create(
        self, key: RecordKey, record: NewRecord, *, now: float, lock: LockRequest | None = None
    ) -> bool:
        args = self._layout.create_args(record, now, lock)
        return bool(self._run(_CREATE, self._layout.key(key), args))

    def apply(self, key: RecordKey, change: Change, *, now: float) -> ApplyResult:
        args = self._layout.apply_args(change, now)
        return proto.apply_reply(self._run(_APPLY, self._layout.key(key), args))

    def invalidate(
        self, key: RecordKey, *, now: float, lease_token: str | None = None
    ) -> bool:
        args = self._layout.invalidate_args(now, lease_token)
        return bool(self._run(lambda s: s.invalidate, self._key(key), args))

    def delete(self, key: RecordKey) -> bool:
        return bool(self._run(lambda s: s.delete, self._key(key), [self._publish]))

    def unlock(self, key: RecordKey, token: str) -> None:
        args = self._layout.unlock_args(token)
        self._run(lambda s: s.unlock, self._key(key), args, idempotent=True)

    def renew(self, key: RecordKey, token: str, *, now: float, lease: float) -> bool:
        args = self._layout.renew_args(token, now, lease)
        return bool(self._run(lambda s: s.renew, self._key(key), args, idempotent=True))

    def wait_unlocked(self, key: RecordKey, timeout: float) -> None:
        """Wait for a message on the record's ``<key>:free`` channel, up to ``timeout``.

        Subscribe first, then look at the lease once more: a lease freed
        between the caller's load and the subscription has already published
        its message, and must not be waited out. Rejected alternative: a
        BLPOP on a per-session list, which wakes one waiter per push and
        leaves stale pushes behind; pub/sub wakes every waiter at once.
        """
        deadline = time.monotonic() + max(0.0, timeout)
        name = self._key(key)
        channel = self._layout.channel(name)
        kinds = self._layout.kinds

        def wait() -> None:
            pubsub = self._pubsub_for(channel)
            try:
                if self._publish == "SPUBLISH":
                    pubsub.ssubscribe(channel)
                else:
                    pubsub.subscribe(channel)
                if not _next_message(pubsub, kinds, deadline):
                    return
                if not self._call(lambda: self._pool_client().hexists(name, "lt"), idempotent=True):
                    return  # freed meanwhile
                _next_message(pubsub, ("message", "smessage"), deadline)
            finally:
                pubsub.close()

        self._call(wait)

    def _pubsub_for(self, channel: str) -> PubSub:
        """A pub/sub on the node that serves ``channel`` (any node for classic pub/sub)."""
        client: Any = self._pool_client()  # redis-py leaves these cluster calls untyped
        if self._cluster:
            client = client.get_redis_connection(client.get_node_from_key(channel))
        pubsub: PubSub = client.pubsub()
        return pubsub

    def _scan_clients(self) -> list[redis.Redis]:
        """One client per server to SCAN: the server, or every Cluster master."""
        client: Any = self._pool_client()
        if self._cluster:
            return [client.get_redis_connection(node) for node in client.get_primaries()]
        return [client]

    def _scan(self, pattern: str) -> Iterator[tuple[redis.Redis, list[bytes]]]:
        """Batches of keys matching ``pattern``, with the client of their server."""
        for client in self._call(self._scan_clients, idempotent=True):
            cursor = 0
            while True:
                step: Callable[[], Any] = lambda: client.scan(  # noqa: E731
                    cursor, match=pattern, count=SCAN_COUNT
                )
                cursor, keys = self._call(step, idempotent=True)
                if keys:
                    yield client, keys
                if cursor == 0:
                    break

    def _pipelined(
        self, client: redis.Redis, keys: Sequence[bytes], queue: Callable[[Any, bytes], None]
    ) -> list[Any]:
        """One round trip of ``queue(pipe, key)`` per key; per-key errors are returned."""

        def run() -> list[Any]:
            self._pool_client()  # the lane's idle connections back to the pool
            pipe = client.pipeline(transaction=False)
            for k in keys:
                queue(pipe, k)
            return pipe.execute(raise_on_error=False)

        return self._call(run)

    def records(self, app_id: str | None = None) -> Iterator[RecordInfo]:
        for client, keys in self._scan(self._layout.pattern(app_id)):
            scripts = self._conn()[1]
            replies = self._pipelined(
                client, keys, lambda pipe, k: scripts.info(keys=[k], args=[], client=pipe)
            )
            for raw, reply in zip(keys, replies):
                listed = proto.info(self._layout, raw, reply, app_id)
                if listed is not None:
                    yield listed

    def purge(self, *, now: float, grace: float, limit: int = 1000) -> int:
        """Delete up to ``limit`` records with ``expires + grace <= now``.

        Redis drops expired records by itself (native TTL), so this finds
        little in practice. It reads each candidate's expiry in one pipelined
        round trip per SCAN batch, then deletes at most ``limit`` of them with
        the PURGE script, which re-checks the expiry atomically: a save that
        landed after the read wins. Bounded: one pass over the keyspace.
        """
        scripts = self._conn()[1]
        gone = self._purged(
            now, grace, limit, scripts.purge, lambda raw, reply: raw if reply == 1 else None
        )
        return len(gone)

    def purge_ended(self, *, now: float, grace: float, limit: int = 1000) -> list[Ended]:
        """As ``purge``, returning what each deleted record held (one script per record).

        Redis also drops records by itself at ``expires`` + the store's
        ``grace`` (native TTL), unannounced: ``expired`` events need purge to
        run before that, with a manager grace shorter than the store's.
        """
        from ..cluster._statements import REDIS_PURGE_RETURNING

        script = self._conn()[0].register_script(REDIS_PURGE_RETURNING)
        layout = self._layout
        return self._purged(
            now, grace, limit, script, lambda raw, reply: proto.ended(layout, raw, reply)
        )

    def _purged(
        self,
        now: float,
        grace: float,
        limit: int,
        script: Script,
        done: Callable[[bytes, Any], T | None],
    ) -> list[T]:
        """Run ``script`` on each record past ``grace``; what ``done`` makes of each deletion."""
        out: list[T] = []
        args = self._layout.purge_args(now, grace)
        for client, keys in self._scan(self._layout.pattern()):
            if len(out) >= limit:
                break
            expiries = self._pipelined(client, keys, lambda pipe, k: pipe.hget(k, "exp"))
            doomed = proto.purgeable(keys, expiries, now=now, grace=grace, room=limit - len(out))
            if doomed:
                results = self._pipelined(
                    client, doomed, lambda pipe, k: script(keys=[k], args=args, client=pipe)
                )
                out += [d for d in map(done, doomed, results) if d is not None]
        return out

    def close(self) -> None:
        """Close the pooled connections (a store never opened has none)."""
        with self._lock:
            ready, self._ready = self._ready, None
        try:
            if ready is not None:
                if ready[2] is not None:
                    ready[2].give_back()
                ready[0].close()
            if self._on_close is not None:
                self._on_close()
        except ERRORS:
            pass  # closing sockets of a server that is gone: nothing to release


def _next_message(pubsub: PubSub, kinds: Sequence[str], deadline: float) -> bool:
    """Read pub/sub messages until one of ``kinds`` arrives (True) or the deadline."""
    while True:
        remaining = deadline - time.monotonic()
        if remaining <= 0:
            return False
        message = pubsub.get_message(timeout=remaining)
        if message is not None and message["type"] in kinds:
            return True
