"""Redis (standalone, Sentinel, Cluster; Valkey too): every operation one Lua script.

URLs (query parameters: ``_OPTIONS`` below; an unknown one is an error)::

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

import math
import threading
import time
from collections.abc import Callable, Iterable, Iterator, Sequence
from dataclasses import dataclass
from typing import Any, TypeVar, Union
from urllib.parse import SplitResult, unquote, urlsplit

import redis
from redis.backoff import ExponentialBackoff, NoBackoff
from redis.client import PubSub
from redis.cluster import ClusterNode, RedisCluster
from redis.commands.core import Script
from redis.exceptions import ConnectionError as RedisConnectionError
from redis.exceptions import AuthenticationError, NoScriptError, RedisClusterException, RedisError
from redis.retry import Retry
from redis.sentinel import Sentinel

from ..errors import ConfigError, StoreUnavailable
from . import _lua
from ._redis_lane import Lane
from ._url import boolean, host_ports, mask_url, query_options, split_url, url_scheme
from .base import (
    ApplyResult,
    ApplyStatus,
    Change,
    Ended,
    LoadResult,
    LoadStatus,
    LockRequest,
    NewRecord,
    Record,
    RecordInfo,
    RecordKey,
    Touch,
)

__all__ = ["RedisStore"]

T = TypeVar("T")
Client = Union[redis.Redis, RedisCluster]

# Anything redis-py raises for a failed call (RedisClusterException is not a
# RedisError: topology errors such as "no nodes reachable").
_ERRORS = (RedisError, RedisClusterException)


def _positive(cast: Callable[[str], T]) -> Callable[[str], T]:
    def check(raw: str) -> T:
        value = _finite(cast(raw))
        if not value > 0:  # type: ignore[operator]
            raise ValueError("must be > 0")
        return value

    return check


def _non_negative(cast: Callable[[str], T]) -> Callable[[str], T]:
    def check(raw: str) -> T:
        value = _finite(cast(raw))
        if value < 0:  # type: ignore[operator]
            raise ValueError("must be >= 0")
        return value

    return check


def _finite(value: T) -> T:
    # float() reads "nan" and "inf": no timeout, grace or TTL can be either.
    if isinstance(value, float) and not math.isfinite(value):
        raise ValueError("must be a finite number")
    return value


def _prefix(raw: str) -> str:
    if "{" in raw or "}" in raw:
        # The record key's braces are its Cluster hash tag; more braces in
        # front would move the tag and split a session over slots.
        raise ValueError("must not contain '{' or '}'")
    return raw


def _cert_reqs(raw: str) -> str:
    if raw not in ("required", "optional", "none"):
        raise ValueError("expected required, optional or none")
    return raw


# The store URL's query parameters, cast by this table.
_OPTIONS: dict[str, Callable[[str], Any]] = {
    "prefix": _prefix,  # key prefix, default "shoal:"
    "grace": _non_negative(float),  # native TTL = expires + grace; default 120 s
    "socket_timeout": _positive(float),  # per command; default 1 s (see _TIMEOUT)
    "socket_connect_timeout": _positive(float),  # default 1 s
    "pool_timeout": _non_negative(float),  # wait for a free pooled connection; 1 s
    "max_connections": _positive(int),  # per process (per node on a Cluster); 64
    "retries": _non_negative(int),  # connection-error retries of idempotent calls; 2
    "db": _non_negative(int),  # database number (unix://, or instead of the path)
    "sharded_pubsub": boolean,  # Cluster lock notifications by SPUBLISH; default true
    "client_name": str,
    "ssl_ca_certs": str,
    "ssl_certfile": str,
    "ssl_keyfile": str,
    "ssl_cert_reqs": _cert_reqs,
}

DEFAULT_PREFIX = "shoal:"
DEFAULT_GRACE = 120.0  # the manager's default grace period
SCAN_COUNT = 500  # keys per SCAN step of records() and purge()


@dataclass(frozen=True, slots=True)
class _Topology:
    """How to make the client of a URL, and what else to close with it."""

    make: Callable[[], Client]
    cluster: bool = False
    on_close: Callable[[], None] | None = None


def _num(value: float) -> str:
    """A float as the shortest string that parses back to the same double."""
    return repr(float(value))


def _glob_escape(text: str) -> str:
    return "".join("\\" + c if c in "*?[]\\" else c for c in text)


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
        self.prefix = _prefix(prefix)
        self.grace = float(grace)
        if isinstance(client, (redis.Redis, RedisCluster)):
            made = client
            self._make: Callable[[], Client] = lambda: made
            cluster = isinstance(client, RedisCluster)
        else:
            self._make = client
        self._cluster = cluster
        self._ready: tuple[Client, _Scripts, Lane | None] | None = None
        self._lock = threading.Lock()
        self._on_close = on_close
        # Sharded pub/sub keeps a Cluster's lock notifications on the slot's
        # shard (Redis >= 7, Valkey); classic PUBLISH is broadcast to every
        # node of a Cluster, but works on every server version.
        sharded = cluster if sharded_pubsub is None else sharded_pubsub
        self._publish = "SPUBLISH" if sharded else "PUBLISH"
        self._grace_arg = _num(self.grace)
        # Only connection errors (refused, reset: they fail fast) are retried;
        # a timeout is never retried, so nothing waits past the socket timeout.
        # The first retry is immediate (a pooled connection the server had
        # closed: a new one will do), later ones back off exponentially.
        self._retries = retries
        self._retry = Retry(
            ExponentialBackoff(cap=0.2, base=0.01),
            max(0, retries - 1),
            supported_errors=(RedisConnectionError,),
        )

    @classmethod
    def from_url(cls, url: str) -> RedisStore:
        options = query_options(url, _OPTIONS)
        store_opts = {
            name: options.pop(name)
            for name in ("prefix", "grace", "retries", "sharded_pubsub")
            if name in options
        }
        topology = _connect(url, options)
        return cls(
            topology.make,
            url=url,
            cluster=topology.cluster,
            on_close=topology.on_close,
            **store_opts,
        )

    def __repr__(self) -> str:
        return f"<RedisStore {self.url!r} prefix={self.prefix!r}>"

    # -- plumbing -----------------------------------------------------------

    def _key(self, key: RecordKey) -> str:
        return f"{self.prefix}{{{key.app_id}:{key.id_hash}}}"

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
        except _ERRORS as exc:
            return self._retried(do, exc, idempotent)

    def _retried(self, do: Callable[[], T], exc: BaseException, idempotent: bool) -> T:
        """After ``do``'s first attempt failed with ``exc``: retry it, or raise."""
        if not (isinstance(exc, RedisConnectionError) and idempotent and self._retries):
            raise self._unavailable(exc) from exc
        try:
            return self._retry.call_with_retry(do, lambda _error: None)
        except _ERRORS as exc:
            raise self._unavailable(exc) from exc

    def _unavailable(self, exc: BaseException) -> StoreUnavailable:
        """The error for a failed call; a refused login or database names the URL to fix.

        Still ``StoreUnavailable`` (a 503, and the breaker answers the next
        requests at once), but saying it is no outage. Rejected: a
        ``ConfigError`` per operation, a 500 for every request.
        """
        text = f"{type(exc).__name__}: {exc}"
        said = str(exc)
        if isinstance(exc, AuthenticationError) or said.startswith(("NOAUTH", "WRONGPASS")):
            return StoreUnavailable(
                self.url,
                f"not an outage, the server refused the login: {text}; check the user "
                "and password in the store URL",
            )
        if "DB index is out of range" in said or "invalid DB index" in said:
            return StoreUnavailable(
                self.url,
                f"not an outage, the server has no such database: {text}; check the "
                "database number in the store URL (the server's `databases` setting)",
            )
        return StoreUnavailable(self.url, text)

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
        except _ERRORS as exc:
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
            return _fields(ready[2].call("HGETALL", key))
        except _ERRORS as exc:
            return self._retried(lambda: self._hgetall_once(key), exc, True)

    def _hgetall_once(self, key: str) -> dict[bytes, bytes]:
        client, _scripts, lane = self._conn()
        if lane is None:
            found: dict[bytes, bytes] = client.hgetall(key)  # type: ignore[assignment]
            return found  # the Cluster client routes by key
        return _fields(lane.call("HGETALL", key))

    # -- the contract -------------------------------------------------------

    def load(
        self,
        key: RecordKey,
        *,
        now: float,
        touch: Touch | None = None,
        lock: LockRequest | None = None,
    ) -> LoadResult:
        name = self._key(key)
        if lock is None:
            # No lease to take: a plain HGETALL, the checks here. Rejected:
            # the LOAD script for every read, whose HGETALL inside Lua cost
            # ~45 us of server time a request (docs/benchmarks.md). A touch
            # that is due (once per touch interval) costs the script after
            # all, which re-checks everything atomically.
            found = self._hgetall(name)
            if not found:
                return _ABSENT
            meta, fields, versions = _split(found.items())
            if b"inv" in meta:
                return _INVALIDATED
            if float(meta[b"exp"]) <= now:
                return _EXPIRED
            if touch is None or not float(meta[b"acc"]) < touch.if_accessed_before:
                return LoadResult(LoadStatus.LOADED, _made(meta, fields, versions))
        args = [
            _num(now),
            "0" if touch is None else "1",
            "" if touch is None else _num(touch.if_accessed_before),
            "" if touch is None else _num(touch.idle_timeout),
            "0" if lock is None else "1",
            "" if lock is None else lock.token,
            "" if lock is None else _num(lock.lease),
            self._grace_arg,
        ]
        # Idempotent even with a touch and a lease: a repeat with the same
        # ``now`` finds the touch done and the lease its own (re-entrant).
        reply = self._run(lambda s: s.load, name, args, idempotent=True)
        status = reply[0]
        if status == b"loaded":
            return LoadResult(LoadStatus.LOADED, _record(reply[1]))
        if status == b"locked":
            return LoadResult(LoadStatus.LOCKED, locked_until=float(reply[1]))
        return LoadResult(LoadStatus(status.decode()))

    def create(
        self, key: RecordKey, record: NewRecord, *, now: float, lock: LockRequest | None = None
    ) -> bool:
        args: list[Any] = [
            _num(now),
            _num(record.created),
            _num(record.expires),
            _num(record.absolute_expires),
            self._grace_arg,
            "0" if lock is None else "1",
            "" if lock is None else lock.token,
            "" if lock is None else _num(lock.lease),
        ]
        for name, value in record.fields.items():
            args += (name, value)
        return bool(self._run(lambda s: s.create, self._key(key), args))

    def apply(self, key: RecordKey, change: Change, *, now: float) -> ApplyResult:
        deletes = list(change.delete)
        args: list[Any] = [
            _num(now),
            _num(change.idle_timeout),
            self._grace_arg,
            "1" if change.replace else "0",
            "1" if change.release else "0",
            "" if change.expect_version is None else str(change.expect_version),
            "0" if change.lease_token is None else "1",
            change.lease_token or "",
            self._publish,
            str(len(change.set)),
            str(len(deletes)),
            str(len(change.expect_fields)),
        ]
        for name, value in change.set.items():
            args += (name, value)
        args += deletes
        for name, seen in change.expect_fields.items():
            args += (name, "" if seen is None else str(seen))
        reply = self._run(lambda s: s.apply, self._key(key), args)
        status = reply[0]
        if status == b"ok":
            return ApplyResult(ApplyStatus.OK, version=int(reply[1]))
        if status == b"conflict":
            keys = tuple(sorted(k.decode() for k in reply[1]))
            return ApplyResult(ApplyStatus.CONFLICT, conflicts=keys)
        return ApplyResult(ApplyStatus(status.decode()))

    def invalidate(
        self, key: RecordKey, *, now: float, lease_token: str | None = None
    ) -> bool:
        args = [
            _num(now),
            self._grace_arg,
            "0" if lease_token is None else "1",
            lease_token or "",
            self._publish,
        ]
        return bool(self._run(lambda s: s.invalidate, self._key(key), args))

    def delete(self, key: RecordKey) -> bool:
        return bool(self._run(lambda s: s.delete, self._key(key), [self._publish]))

    def unlock(self, key: RecordKey, token: str) -> None:
        self._run(lambda s: s.unlock, self._key(key), [token, self._publish], idempotent=True)

    def renew(self, key: RecordKey, token: str, *, now: float, lease: float) -> bool:
        args = [token, _num(now), _num(lease)]
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
        channel = f"{name}:free"
        kinds = ("subscribe", "ssubscribe") if self._publish == "PUBLISH" else ("ssubscribe",)

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
        pattern = _glob_escape(self.prefix) + "{"
        if app_id is not None:
            pattern += _glob_escape(app_id) + ":"
        pattern += "*"
        for client, keys in self._scan(pattern):
            scripts = self._conn()[1]
            replies = self._pipelined(
                client, keys, lambda pipe, k: scripts.info(keys=[k], args=[], client=pipe)
            )
            for raw, reply in zip(keys, replies):
                key = self._parse_key(raw)
                if key is None or not isinstance(reply, list):
                    continue  # not a record (or moved to another node meanwhile)
                if app_id is not None and key.app_id != app_id:
                    continue
                yield _info(key, reply)

    def purge(self, *, now: float, grace: float, limit: int = 1000) -> int:
        """Delete up to ``limit`` records with ``expires + grace <= now``.

        Redis drops expired records by itself (native TTL), so this finds
        little in practice. It reads each candidate's expiry in one pipelined
        round trip per SCAN batch, then deletes at most ``limit`` of them with
        the PURGE script, which re-checks the expiry atomically: a save that
        landed after the read wins. Bounded: one pass over the keyspace.
        """
        deleted = 0
        pattern = _glob_escape(self.prefix) + "{*"
        args = [_num(now), _num(grace)]
        for client, keys in self._scan(pattern):
            if deleted >= limit:
                break
            scripts = self._conn()[1]
            expiries = self._pipelined(client, keys, lambda pipe, k: pipe.hget(k, "exp"))
            doomed = [
                k
                for k, raw in zip(keys, expiries)
                if isinstance(raw, bytes) and _is_float(raw) and float(raw) + grace <= now
            ][: limit - deleted]
            if doomed:
                results = self._pipelined(
                    client, doomed, lambda pipe, k: scripts.purge(keys=[k], args=args, client=pipe)
                )
                deleted += sum(1 for r in results if r == 1)
        return deleted

    def purge_ended(self, *, now: float, grace: float, limit: int = 1000) -> list[Ended]:
        """As ``purge``, returning what each deleted record held (one script per record).

        Redis also drops records by itself at ``expires`` + the store's
        ``grace`` (native TTL), unannounced: ``expired`` events need purge to
        run before that, with a manager grace shorter than the store's.
        """
        from ..cluster._statements import REDIS_PURGE_RETURNING

        ended: list[Ended] = []
        pattern = _glob_escape(self.prefix) + "{*"
        args = [_num(now), _num(grace)]
        script = self._conn()[0].register_script(REDIS_PURGE_RETURNING)
        for client, keys in self._scan(pattern):
            if len(ended) >= limit:
                break
            expiries = self._pipelined(client, keys, lambda pipe, k: pipe.hget(k, "exp"))
            doomed = [
                k
                for k, raw in zip(keys, expiries)
                if isinstance(raw, bytes) and _is_float(raw) and float(raw) + grace <= now
            ][: limit - len(ended)]
            if doomed:
                results = self._pipelined(
                    client, doomed, lambda pipe, k: script(keys=[k], args=args, client=pipe)
                )
                for raw_key, flat in zip(doomed, results):
                    key = self._parse_key(raw_key)
                    if key is None or not isinstance(flat, list):
                        continue
                    pairs = dict(zip(flat[::2], flat[1::2]))
                    fields = {
                        name[2:].decode(): value
                        for name, value in pairs.items()
                        if name[:2] == b"f:"
                    }
                    ended.append(Ended(key, fields, pairs.get(b"inv") not in (None, b"", b"0")))
        return ended

    def _parse_key(self, raw: bytes) -> RecordKey | None:
        text = raw.decode("utf-8", "replace")
        inner = text[len(self.prefix) :]
        if not (text.startswith(self.prefix) and inner.startswith("{") and inner.endswith("}")):
            return None
        app_id, sep, id_hash = inner[1:-1].partition(":")
        return RecordKey(app_id, id_hash) if sep else None

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
        except _ERRORS:
            pass  # closing sockets of a server that is gone: nothing to release


# -- replies -----------------------------------------------------------------


def _fields(reply: Any) -> dict[bytes, bytes]:
    """An HGETALL reply as a dict: RESP3 (redis-py's default) sends a map, RESP2 a list."""
    if isinstance(reply, dict):
        return reply
    it = iter(reply)
    return dict(zip(it, it))


_ABSENT = LoadResult(LoadStatus.ABSENT)
_INVALIDATED = LoadResult(LoadStatus.INVALIDATED)
_EXPIRED = LoadResult(LoadStatus.EXPIRED)


def _split(
    pairs: Iterable[tuple[bytes, bytes]],
) -> tuple[dict[bytes, bytes], dict[str, bytes], dict[str, int]]:
    """A record hash's (name, value) pairs as (meta fields, session values, their versions)."""
    stored: dict[bytes, bytes] = {}
    fields: dict[str, bytes] = {}
    versions: dict[str, int] = {}
    for name, value in pairs:
        head = name[:2]
        if head == b"f:":
            fields[name[2:].decode()] = value
        elif head == b"v:":
            versions[name[2:].decode()] = int(value)
        else:
            stored[name] = value
    return stored, fields, versions


def _record(flat: list[bytes]) -> Record:
    """A Record from a script's HGETALL (lease fields are not part of it)."""
    it = iter(flat)
    return _made(*_split(zip(it, it)))


def _made(stored: dict[bytes, bytes], fields: dict[str, bytes], versions: dict[str, int]) -> Record:
    return Record(
        version=int(stored[b"ver"]),
        created=float(stored[b"ctd"]),
        accessed=float(stored[b"acc"]),
        expires=float(stored[b"exp"]),
        absolute_expires=float(stored[b"abs"]),
        fields=fields,
        field_versions=versions,
    )


def _info(key: RecordKey, reply: list[Any]) -> RecordInfo:
    version, created, accessed, expires, invalidated, token, until, size = reply
    return RecordInfo(
        key=key,
        version=int(version),
        created=float(created),
        accessed=float(accessed),
        expires=float(expires),
        invalidated=invalidated == b"1",
        size=int(size),
        locked_until=float(until) if token else None,
    )


def _is_float(raw: bytes) -> bool:
    try:
        float(raw)
    except ValueError:
        return False
    return True


def _next_message(pubsub: PubSub, kinds: Sequence[str], deadline: float) -> bool:
    """Read pub/sub messages until one of ``kinds`` arrives (True) or the deadline."""
    while True:
        remaining = deadline - time.monotonic()
        if remaining <= 0:
            return False
        message = pubsub.get_message(timeout=remaining)
        if message is not None and message["type"] in kinds:
            return True


# -- connecting ----------------------------------------------------------------


def _hosts(url: str, netloc: str) -> list[tuple[str, int]]:
    """``host:port,host:port`` of a Sentinel or Cluster URL, each port checked."""
    default = 26379 if url_scheme(url).endswith("+sentinel") else 6379
    return host_ports(url, netloc, default_port=default, allow_empty_host=False)


def _check_standalone(url: str, scheme: str, parts: SplitResult) -> None:
    """Refuse a redis://, rediss:// or unix:// URL that could never connect.

    redis-py reads a path that is not a number as database 0, and fails on a
    bad port only at the first command; both are errors here.
    """
    masked = mask_url(url)
    if scheme == "unix":
        if parts.netloc.rpartition("@")[2]:
            raise ConfigError(
                f"{masked}: a unix:// URL has no host; write unix:///path/to/redis.sock[?db=N]"
            )
        if not parts.path.strip("/"):
            raise ConfigError(
                f"{masked}: name the socket path: unix:///path/to/redis.sock[?db=N]"
            )
        return
    if "," in parts.netloc:
        raise ConfigError(
            f"{masked}: {scheme}:// takes one host; for several use redis+sentinel:// "
            "or redis+cluster://"
        )
    host_ports(url, parts.netloc, default_port=6379)
    db = unquote(parts.path).strip("/")
    if db and not (db.isascii() and db.isdigit()):
        raise ConfigError(
            f"{masked}: the path is the database number, as in {scheme}://host:6379/0; "
            f"got {db!r}"
        )


def _credentials(url: str) -> dict[str, Any]:
    parts = urlsplit(url)
    creds: dict[str, Any] = {}
    if parts.username:
        creds["username"] = unquote(parts.username)
    if parts.password is not None:
        creds["password"] = unquote(parts.password)
    return creds


# The default of every socket and pool wait, in seconds. A session script
# answers in well under a millisecond: a second is a server that is hung or
# gone, and the circuit breaker opens on the first such failure, so a
# request waits this long at most once per outage and process (and once per
# probe). A Redis that is slow on purpose (a remote one, big sessions) takes
# ``socket_timeout=``... in the URL. Lease waits (``wait_unlocked``) are not
# bounded by it: they read their pub/sub with their own timeout.
# Rejected: the former 3 s (2 s to connect), which a hung Redis made every
# request of a sync worker wait.
_TIMEOUT = 1.0


def _connection_kwargs(options: dict[str, Any], *, tls: bool) -> dict[str, Any]:
    """Socket, TLS and naming options shared by every topology (no retries:
    see RedisStore._call for the ones we allow)."""
    kwargs: dict[str, Any] = {
        "socket_timeout": options.get("socket_timeout", _TIMEOUT),
        "socket_connect_timeout": options.get("socket_connect_timeout", _TIMEOUT),
        "socket_keepalive": True,
    }
    if "client_name" in options:
        kwargs["client_name"] = options["client_name"]
    ssl = {k: v for k, v in options.items() if k.startswith("ssl_")}
    if ssl and not tls:
        raise ConfigError(
            f"{', '.join(sorted(ssl))} need a TLS URL: use rediss://, rediss+sentinel:// "
            "or rediss+cluster://"
        )
    kwargs.update(ssl)
    if tls:
        kwargs["ssl"] = True
    return kwargs


def _connect(url: str, options: dict[str, Any]) -> _Topology:
    """How to make the redis-py client for ``url``; nothing connects before first use."""
    scheme = url.split(":", 1)[0].lower()
    parts = split_url(url)
    pool_timeout = options.pop("pool_timeout", _TIMEOUT)
    max_connections = options.pop("max_connections", 64)
    db = options.pop("db", None)
    kwargs = _connection_kwargs(options, tls=scheme.startswith("rediss"))
    no_retry = Retry(NoBackoff(), 0)
    if scheme in ("redis", "rediss", "unix"):
        _check_standalone(url, scheme, parts)
        if db is not None:
            if scheme != "unix" and parts.path.strip("/"):
                raise ConfigError(f"{mask_url(url)}: give the db in the path or db=, not both")
            kwargs["db"] = db
        kwargs.pop("ssl", None)  # rediss:// says it already
        # Blocking: a burst of threads waits up to pool_timeout for a
        # connection instead of failing at once (ConnectionPool's behaviour).
        pool = redis.BlockingConnectionPool.from_url(
            url.split("?", 1)[0],
            max_connections=max_connections,
            timeout=pool_timeout,
            retry=no_retry,
            **kwargs,
        )
        client = redis.Redis.from_pool(pool)  # closing the client closes the pool
        return _Topology(lambda: client)
    if scheme in ("redis+sentinel", "rediss+sentinel"):
        return _sentinel(url, parts.path, db, kwargs, max_connections, no_retry)
    if scheme in ("redis+cluster", "rediss+cluster"):
        if db not in (None, 0) or parts.path.strip("/") not in ("", "0"):
            raise ConfigError(f"{mask_url(url)}: a Redis Cluster has only database 0")
        nodes = [_node(h, p) for h, p in _hosts(url, parts.netloc)]
        credentials = _credentials(url)

        def make() -> Client:
            # Reads the topology from the first startup node that answers.
            return RedisCluster(
                startup_nodes=nodes,
                retry=no_retry,
                max_connections=max_connections,
                **credentials,
                **kwargs,
            )

        return _Topology(make, cluster=True)
    raise ConfigError(f"{mask_url(url)}: not a Redis URL")


def _node(host: str, port: int) -> ClusterNode:
    make: Any = ClusterNode  # untyped in redis-py
    node: ClusterNode = make(host, port)
    return node


def _sentinel(
    url: str,
    path: str,
    db: int | None,
    kwargs: dict[str, Any],
    max_connections: int,
    no_retry: Retry,
) -> _Topology:
    segments = [unquote(s) for s in path.split("/") if s]
    if not segments or len(segments) > 2:
        raise ConfigError(
            f"{mask_url(url)}: expected redis+sentinel://host:port[,host:port]/service_name[/db]"
        )
    service = segments[0]
    if len(segments) == 2:
        if not segments[1].isdigit() or db is not None:
            raise ConfigError(f"{mask_url(url)}: the db is a number, in the path or db=")
        db = int(segments[1])
    # The sentinels themselves: same timeouts and TLS, no database, no name.
    # (redis-py's default for them retries 3 times with seconds of backoff.)
    sentinel_kwargs = {
        k: v for k, v in kwargs.items() if k.startswith(("socket_", "ssl"))
    }
    sentinel_kwargs["retry"] = no_retry
    # redis-py leaves Sentinel untyped.
    make: Any = Sentinel
    sentinel: Any = make(
        _hosts(url, urlsplit(url).netloc), sentinel_kwargs=sentinel_kwargs, **kwargs
    )
    client: redis.Redis = sentinel.master_for(
        service,
        db=db or 0,
        retry=no_retry,
        max_connections=max_connections,
        **_credentials(url),
    )

    def close() -> None:
        for node in sentinel.sentinels:
            node.close()

    return _Topology(lambda: client, on_close=close)
