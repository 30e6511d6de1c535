"""What the sync and the async Redis stores share: URL, layout, arguments, replies.

``RedisStore`` (redis-py) and ``AsyncRedisStore`` (``redis.asyncio``) differ
only in how a command travels. Everything else is here, once, as pure code:

- the store URL: its query table (``OPTIONS``), its checks, and the ``Plan``
  of what to connect to; ``topology(plan, flavour)`` makes the clients of a
  plan from redis-py's sync or async classes (a ``Flavour``), so one
  function knows how a Sentinel or a Cluster is reached;
- the record layout (``Layout``: key, channel, SCAN patterns) and each
  script's ARGV (``Layout.load_args`` ... ``Layout.purge_args``), in the
  order the headers of ``_lua.py`` give;
- the replies: a record hash (``loaded_from_hash``, the lock-free read's
  checks), each script's answer (``load_reply``, ``apply_reply``), a
  listing row (``info``), a purge candidate (``purgeable``), an ended
  record (``ended``);
- the errors: which exceptions are redis-py's (``ERRORS``) and the
  ``StoreUnavailable`` each becomes (``unavailable``).

Rejected: an async store generated from the sync one (httpcore's unasync):
the sync store's lane (``_redis_lane.py``) has no async twin, and what is
left to differ is the few lines that send a command.
"""

from __future__ import annotations

import hashlib
import math
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any, Literal, TypeVar
from urllib.parse import SplitResult, unquote, urlsplit

from redis.backoff import ExponentialBackoff, NoBackoff
from redis.exceptions import ConnectionError as RedisConnectionError
from redis.exceptions import AuthenticationError, RedisClusterException, RedisError

from ..errors import ConfigError, StoreUnavailable
from . import _lua
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

__all__ = [
    "DEFAULT_GRACE",
    "DEFAULT_PREFIX",
    "ERRORS",
    "OPTIONS",
    "SCAN_COUNT",
    "SCRIPTS",
    "Flavour",
    "Layout",
    "Plan",
    "Topology",
    "apply_reply",
    "fields_of",
    "from_url",
    "info",
    "load_reply",
    "loaded_from_hash",
    "num",
    "parse_record",
    "purgeable",
    "retry_policy",
    "topology",
    "unavailable",
]

T = TypeVar("T")

# Anything redis-py raises for a failed call (RedisClusterException is not a
# RedisError: topology errors such as "no nodes reachable").
ERRORS = (RedisError, RedisClusterException)


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


def check_prefix(raw: str) -> str:
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
OPTIONS: dict[str, Callable[[str], Any]] = {
    "prefix": check_prefix,  # key prefix, default "shoal:"
    "grace": _non_negative(float),  # native TTL = expires + grace; default 120 s
    "socket_timeout": _positive(float),  # per command; default 1 s (see TIMEOUT)
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

# The options that configure the store rather than its connections.
_STORE_OPTIONS = ("prefix", "grace", "retries", "sharded_pubsub")

DEFAULT_PREFIX = "shoal:"
DEFAULT_GRACE = 120.0  # the manager's default grace period
SCAN_COUNT = 500  # keys per SCAN step of records() and purge()

# Every script by name, with the SHA1 that EVALSHA names it by (what redis-py's
# Script objects compute; the async store sends EVALSHA itself).
SCRIPTS: dict[str, tuple[str, str]] = {
    name: (text, hashlib.sha1(text.encode()).hexdigest())
    for name, text in {
        "load": _lua.LOAD,
        "create": _lua.CREATE,
        "apply": _lua.APPLY,
        "invalidate": _lua.INVALIDATE,
        "unlock": _lua.UNLOCK,
        "renew": _lua.RENEW,
        "delete": _lua.DELETE,
        "purge": _lua.PURGE,
        "info": _lua.INFO,
    }.items()
}


def num(value: float) -> str:
    """A float as the shortest string that parses back to the same double."""
    return repr(float(value))


def _glob_escape(text: str) -> str:
    return "".join("\\" + c if c in "*?[]\\" else c for c in text)


def retry_policy(retry_class: Callable[..., T], retries: int) -> T:
    """The retry of idempotent calls: connection errors only, never a timeout.

    Connection errors (refused, reset) fail fast; a timeout is never
    retried, so nothing waits past the socket timeout. The first retry is
    immediate (a pooled connection the server had closed: a new one will
    do), later ones back off exponentially. ``retry_class`` is redis-py's
    ``Retry`` or its asyncio twin.
    """
    return retry_class(
        ExponentialBackoff(cap=0.2, base=0.01),
        max(0, retries - 1),
        supported_errors=(RedisConnectionError,),
    )


# -- the record layout and each script's arguments ------------------------------


class Layout:
    """Keys, channels and script arguments of one store (see ``_lua.py``'s headers)."""

    __slots__ = ("grace", "grace_arg", "kinds", "prefix", "publish")

    def __init__(self, *, prefix: str, grace: float, sharded: bool) -> None:
        self.prefix = check_prefix(prefix)
        self.grace = float(grace)
        self.grace_arg = num(self.grace)
        # Sharded pub/sub keeps a Cluster's lock notifications on the slot's
        # shard (Redis >= 7, Valkey); classic PUBLISH is broadcast to every
        # node of a Cluster, but works on every server version.
        self.publish = "SPUBLISH" if sharded else "PUBLISH"
        # The pub/sub replies that confirm a subscription.
        self.kinds = ("ssubscribe",) if sharded else ("subscribe", "ssubscribe")

    def key(self, key: RecordKey) -> str:
        return f"{self.prefix}{{{key.app_id}:{key.id_hash}}}"

    @staticmethod
    def channel(name: str) -> str:
        """The channel a freed lease of record ``name`` is published on."""
        return f"{name}:free"

    def parse_key(self, raw: bytes) -> RecordKey | None:
        text = raw.decode("utf-8", "replace")
        inner = text[len(self.prefix) :]
        if not (text.startswith(self.prefix) and inner.startswith("{") and inner.endswith("}")):
            return None
        app_id, sep, id_hash = inner[1:-1].partition(":")
        return RecordKey(app_id, id_hash) if sep else None

    def pattern(self, app_id: str | None = None) -> str:
        """The SCAN pattern of every record, or of one namespace's."""
        pattern = _glob_escape(self.prefix) + "{"
        if app_id is not None:
            pattern += _glob_escape(app_id) + ":"
        return pattern + "*"

    def load_args(self, now: float, touch: Touch | None, lock: LockRequest | None) -> list[Any]:
        return [
            num(now),
            "0" if touch is None else "1",
            "" if touch is None else num(touch.if_accessed_before),
            "" if touch is None else num(touch.idle_timeout),
            "0" if lock is None else "1",
            "" if lock is None else lock.token,
            "" if lock is None else num(lock.lease),
            self.grace_arg,
        ]

    def create_args(self, record: NewRecord, now: float, lock: LockRequest | None) -> list[Any]:
        args: list[Any] = [
            num(now),
            num(record.created),
            num(record.expires),
            num(record.absolute_expires),
            self.grace_arg,
            "0" if lock is None else "1",
            "" if lock is None else lock.token,
            "" if lock is None else num(lock.lease),
        ]
        for name, value in record.fields.items():
            args += (name, value)
        return args

    def apply_args(self, change: Change, now: float) -> list[Any]:
        # Built in one list display, each collection appended as it is
        # (num() inlined: a save's arguments are on every request's path).
        sets, deletes, expects = change.set, change.delete, change.expect_fields
        token, expect = change.lease_token, change.expect_version
        args: list[Any] = [
            repr(float(now)),
            repr(float(change.idle_timeout)),
            self.grace_arg,
            "1" if change.replace else "0",
            "1" if change.release else "0",
            "" if expect is None else str(expect),
            "0" if token is None else "1",
            token or "",
            self.publish,
            str(len(sets)),
            str(len(deletes)),
            str(len(expects)),
        ]
        for item in sets.items():
            args += item
        if deletes:
            args += deletes
        for name, seen in expects.items():
            args += (name, "" if seen is None else str(seen))
        return args

    def invalidate_args(self, now: float, lease_token: str | None) -> list[Any]:
        return [
            num(now),
            self.grace_arg,
            "0" if lease_token is None else "1",
            lease_token or "",
            self.publish,
        ]

    def unlock_args(self, token: str) -> list[Any]:
        return [token, self.publish]

    @staticmethod
    def renew_args(token: str, now: float, lease: float) -> list[Any]:
        return [token, num(now), num(lease)]

    @staticmethod
    def purge_args(now: float, grace: float) -> list[Any]:
        return [num(now), num(grace)]


# -- replies -----------------------------------------------------------------


def fields_of(reply: Any) -> dict[bytes, bytes]:
    """An HGETALL reply as a dict: RESP3 (redis-py's default) sends a map, RESP2 a list."""
    if isinstance(reply, dict):
        return reply
    it = iter(reply)
    return dict(zip(it, it))


_ABSENT = LoadResult(LoadStatus.ABSENT)
_INVALIDATED = LoadResult(LoadStatus.INVALIDATED)
_EXPIRED = LoadResult(LoadStatus.EXPIRED)
# The members every request's replies are made of, read once: on Python
# 3.11 each ``LoadStatus.LOADED`` goes through EnumType.__getattr__'s hook
# (measured: ~1k instructions a lookup, a global ~0.1k).
_LOADED = LoadStatus.LOADED
_APPLIED = ApplyStatus.OK


def loaded_from_hash(
    found: dict[bytes, bytes], now: float, touch: Touch | None
) -> LoadResult | None:
    """A lock-free load answered from the record hash; None when a touch is due.

    Rejected: the LOAD script for every read, whose HGETALL inside Lua cost
    ~45 us of server time a request (docs/benchmarks.md). A touch that is
    due (once per touch interval) costs the script after all, which
    re-checks everything atomically. The meta fields are looked up by name
    and only the session's own fields are walked (``_record``).
    """
    if not found:
        return _ABSENT
    if b"inv" in found:
        return _INVALIDATED
    expires = float(found[b"exp"])
    if expires <= now:
        return _EXPIRED
    accessed = float(found[b"acc"])
    if touch is not None and accessed < touch.if_accessed_before:
        return None
    return LoadResult(_LOADED, _record(found, accessed, expires))


def load_reply(reply: Any) -> LoadResult:
    """The LOAD script's answer as a ``LoadResult``."""
    status = reply[0]
    if status == b"loaded":
        return LoadResult(_LOADED, parse_record(reply[1]))
    if status == b"locked":
        return LoadResult(LoadStatus.LOCKED, locked_until=float(reply[1]))
    return LoadResult(LoadStatus(status.decode()))


_OK = b"ok"


def apply_reply(reply: Any) -> ApplyResult:
    """The APPLY script's answer as an ``ApplyResult``."""
    status = reply[0]
    if status == _OK:
        return ApplyResult(_APPLIED, int(reply[1]))
    if status == b"conflict":
        keys = tuple(sorted(k.decode() for k in reply[1]))
        return ApplyResult(ApplyStatus.CONFLICT, conflicts=keys)
    return ApplyResult(ApplyStatus(status.decode()))


def parse_record(flat: list[bytes]) -> Record:
    """A Record from a script's HGETALL (lease fields are not part of it)."""
    it = iter(flat)
    found = dict(zip(it, it))
    return _record(found, float(found[b"acc"]), float(found[b"exp"]))


# What each field name of a record hash is: b"f:<k>" -> (True, "<k>"),
# b"v:<k>" -> (False, "<k>"), a meta field -> None. A process reads the same
# few names over and over, so each is decoded once (measured: ~25k of ~75k
# client instructions a load were decoding). Bounded: cleared when full, so
# keys made up per session cannot grow it without end.
_META_NAMES = (b"ver", b"ctd", b"acc", b"exp", b"abs", b"inv", b"lt", b"lu")
_NAMES: dict[bytes, tuple[bool, str] | None] = dict.fromkeys(_META_NAMES)
_NAMES_MAX = 4096
_UNSEEN = (False, "")  # a marker: ``_NAMES.get``'s default, never stored


def _name(raw: bytes) -> tuple[bool, str] | None:
    head = raw[:2]
    kind = (True, raw[2:].decode()) if head == b"f:" else (
        (False, raw[2:].decode()) if head == b"v:" else None
    )
    if len(_NAMES) >= _NAMES_MAX:
        _NAMES.clear()
        _NAMES.update(dict.fromkeys(_META_NAMES))
    _NAMES[raw] = kind
    return kind


def _record(found: dict[bytes, bytes], accessed: float, expires: float) -> Record:
    """The Record of a record hash whose ``acc`` and ``exp`` the caller has read.

    One pass over the hash, each name classified by ``_NAMES``; meta fields
    are read by name. Rejected: slicing and decoding every name on every
    load (two comprehensions: ~1.4x the instructions).
    """
    fields: dict[str, bytes] = {}
    versions: dict[str, int] = {}
    get = _NAMES.get  # one lookup a name: the meta names are in it too, as None
    for raw, value in found.items():
        kind = get(raw, _UNSEEN)
        if kind is _UNSEEN:
            kind = _name(raw)
        if kind is not None:
            if kind[0]:
                fields[kind[1]] = value
            else:
                versions[kind[1]] = int(value)
    return Record(
        int(found[b"ver"]),
        float(found[b"ctd"]),
        accessed,
        expires,
        float(found[b"abs"]),
        fields,
        versions,
    )


def info(layout: Layout, raw: bytes, reply: Any, app_id: str | None) -> RecordInfo | None:
    """A listing row from the INFO script's answer for SCAN's key ``raw``.

    None when ``raw`` is not a record (or moved to another node meanwhile),
    or belongs to another namespace than ``app_id``.
    """
    key = layout.parse_key(raw)
    if key is None or not isinstance(reply, list):
        return None
    if app_id is not None and key.app_id != app_id:
        return None
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


def purgeable(
    keys: Sequence[bytes], expiries: Sequence[Any], *, now: float, grace: float, room: int
) -> list[bytes]:
    """The keys (at most ``room``) whose read expiry is more than ``grace`` ago.

    Only candidates: the PURGE script re-checks each one atomically.
    """
    return [
        k
        for k, raw in zip(keys, expiries)
        if isinstance(raw, bytes) and _is_float(raw) and float(raw) + grace <= now
    ][: max(0, room)]


def ended(layout: Layout, raw: bytes, flat: Any) -> Ended | None:
    """What REDIS_PURGE_RETURNING deleted for key ``raw``; None when it deleted nothing."""
    key = layout.parse_key(raw)
    if key is None or not isinstance(flat, list):
        return None
    pairs = dict(zip(flat[::2], flat[1::2]))
    fields = {name[2:].decode(): value for name, value in pairs.items() if name[:2] == b"f:"}
    return Ended(key, fields, pairs.get(b"inv") not in (None, b"", b"0"))


def _is_float(raw: bytes) -> bool:
    try:
        float(raw)
    except ValueError:
        return False
    return True


def unavailable(url: str, exc: BaseException) -> StoreUnavailable:
    """The error for a failed call; a refused login or database names the URL to fix.

    Still ``StoreUnavailable`` (a 503, and the breaker answers the next
    requests at once), but saying it is no outage. Rejected: a
    ``ConfigError`` per operation, a 500 for every request.
    """
    text = f"{type(exc).__name__}: {exc}"
    said = str(exc)
    if isinstance(exc, AuthenticationError) or said.startswith(("NOAUTH", "WRONGPASS")):
        return StoreUnavailable(
            url,
            f"not an outage, the server refused the login: {text}; check the user "
            "and password in the store URL",
        )
    if "DB index is out of range" in said or "invalid DB index" in said:
        return StoreUnavailable(
            url,
            f"not an outage, the server has no such database: {text}; check the "
            "database number in the store URL (the server's `databases` setting)",
        )
    return StoreUnavailable(url, text)


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
TIMEOUT = 1.0


def _connection_kwargs(options: dict[str, Any], *, tls: bool) -> dict[str, Any]:
    """Socket, TLS and naming options shared by every topology (no retries:
    see ``retry_policy`` for the ones we allow)."""
    kwargs: dict[str, Any] = {
        "socket_timeout": options.get("socket_timeout", TIMEOUT),
        "socket_connect_timeout": options.get("socket_connect_timeout", TIMEOUT),
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


@dataclass(frozen=True, slots=True)
class Plan:
    """What a Redis URL connects to, checked; no client is made yet."""

    kind: Literal["standalone", "sentinel", "cluster"]
    url: str  # the URL without its query (what redis-py's from_url reads)
    kwargs: dict[str, Any]  # connection options of every topology
    max_connections: int
    pool_timeout: float
    hosts: list[tuple[str, int]] = field(default_factory=list)  # sentinels or startup nodes
    service: str = ""  # the Sentinel service name
    db: int = 0
    credentials: dict[str, Any] = field(default_factory=dict)


def from_url(url: str) -> tuple[dict[str, Any], Plan]:
    """A store URL as (the store's own keyword arguments, the ``Plan`` to connect)."""
    options = query_options(url, OPTIONS)
    store_opts = {name: options.pop(name) for name in _STORE_OPTIONS if name in options}
    return store_opts, _plan(url, options)


def _plan(url: str, options: dict[str, Any]) -> Plan:
    scheme = url.split(":", 1)[0].lower()
    parts = split_url(url)
    pool_timeout = options.pop("pool_timeout", TIMEOUT)
    max_connections = options.pop("max_connections", 64)
    db = options.pop("db", None)
    kwargs = _connection_kwargs(options, tls=scheme.startswith("rediss"))
    base = url.split("?", 1)[0]
    if scheme in ("redis", "rediss", "unix"):
        _check_standalone(url, scheme, parts)
        if scheme == "unix":
            # TCP keepalive means nothing on a Unix socket, and redis-py's
            # Unix-socket connection refuses the option at its first command.
            kwargs.pop("socket_keepalive", None)
        if db is not None:
            if scheme != "unix" and parts.path.strip("/"):
                raise ConfigError(f"{mask_url(url)}: give the db in the path or db=, not both")
            kwargs["db"] = db
        kwargs.pop("ssl", None)  # rediss:// says it already
        return Plan("standalone", base, kwargs, max_connections, pool_timeout)
    if scheme in ("redis+sentinel", "rediss+sentinel"):
        segments = [unquote(s) for s in parts.path.split("/") if s]
        if not segments or len(segments) > 2:
            raise ConfigError(
                f"{mask_url(url)}: expected "
                "redis+sentinel://host:port[,host:port]/service_name[/db]"
            )
        if len(segments) == 2:
            if not segments[1].isdigit() or db is not None:
                raise ConfigError(f"{mask_url(url)}: the db is a number, in the path or db=")
            db = int(segments[1])
        return Plan(
            "sentinel", base, kwargs, max_connections, pool_timeout,
            hosts=_hosts(url, parts.netloc), service=segments[0], db=db or 0,
            credentials=_credentials(url),
        )  # fmt: skip
    if scheme in ("redis+cluster", "rediss+cluster"):
        if db not in (None, 0) or parts.path.strip("/") not in ("", "0"):
            raise ConfigError(f"{mask_url(url)}: a Redis Cluster has only database 0")
        return Plan(
            "cluster", base, kwargs, max_connections, pool_timeout,
            hosts=_hosts(url, parts.netloc), credentials=_credentials(url),
        )  # fmt: skip
    raise ConfigError(f"{mask_url(url)}: not a Redis URL")


@dataclass(frozen=True, slots=True)
class Flavour:
    """redis-py's client classes of one kind: the sync ones, or ``redis.asyncio``'s."""

    blocking_pool: Any
    redis: Any
    sentinel: Any
    cluster: Any
    cluster_node: Any
    retry: Any


@dataclass(frozen=True, slots=True)
class Topology:
    """How to make the client of a URL, and what else to close with it."""

    make: Callable[[], Any]
    cluster: bool = False
    also_close: Sequence[Any] = ()  # clients to close with the store (the sentinels)


def topology(plan: Plan, flavour: Flavour) -> Topology:
    """How to make ``plan``'s client from ``flavour``'s classes; nothing connects yet.

    A standalone or Sentinel client is made here (redis-py connects on the
    first command); a Cluster client reads the topology when it is made, so
    it is made on first use, and a store opens while its servers are down,
    as every other store does.
    """
    no_retry = flavour.retry(NoBackoff(), 0)
    kwargs = plan.kwargs
    if plan.kind == "standalone":
        # Blocking: a burst of callers waits up to pool_timeout for a
        # connection instead of failing at once (ConnectionPool's behaviour).
        pool = flavour.blocking_pool.from_url(
            plan.url,
            max_connections=plan.max_connections,
            timeout=plan.pool_timeout,
            retry=no_retry,
            **kwargs,
        )
        client = flavour.redis.from_pool(pool)  # closing the client closes the pool
        return Topology(lambda: client)
    if plan.kind == "sentinel":
        # The sentinels themselves: same timeouts and TLS, no database, no name.
        # (redis-py's default for them retries 3 times with seconds of backoff.)
        sentinel_kwargs = {k: v for k, v in kwargs.items() if k.startswith(("socket_", "ssl"))}
        sentinel_kwargs["retry"] = no_retry
        sentinel = flavour.sentinel(plan.hosts, sentinel_kwargs=sentinel_kwargs, **kwargs)
        master = sentinel.master_for(
            plan.service,
            db=plan.db,
            retry=no_retry,
            max_connections=plan.max_connections,
            **plan.credentials,
        )
        return Topology(lambda: master, also_close=tuple(sentinel.sentinels))
    nodes = [flavour.cluster_node(host, port) for host, port in plan.hosts]

    def make() -> Any:
        # Reads the topology from the first startup node that answers.
        return flavour.cluster(
            startup_nodes=nodes,
            retry=no_retry,
            max_connections=plan.max_connections,
            **plan.credentials,
            **kwargs,
        )

    return Topology(make, cluster=True)
