"""``SessionManager``: one per application; loads, locks, saves and ends sessions.

A manager owns the meaning of a session's life: timeouts, the policy, the
store key ``(app_id, hash(id))``, strict id handling (an id the store does
not know is never adopted) and what the client must be told afterwards
(``CommitOutcome``). Middleware only moves the id between the request and
the manager.
"""

from __future__ import annotations

import logging
import secrets
import threading
import time
from collections.abc import Callable, Collection, Mapping, Sequence
from dataclasses import dataclass, replace
from typing import Any, Final, Literal, TypeVar

from . import _rotation
from ._settings import check_manager_settings, size_limit
from ._steps import BASE, SESSION, OffLoop, Op, Steps, StoreRef, arun, call, run
from .clock import Clock, system_clock
from .cluster.expiry import purge_announcing
from .cluster.hub import Hub
from .cluster.listeners import Listener
from .cluster.metrics import metrics_for
from .cluster.near_cache import NearCache
from .codec import Codec, JsonCodec, decode_field
from .config import default_store_url
from .cookies import CookieOptions
from .errors import (
    ConfigError,
    ConflictError,
    LockLost,
    LockTimeout,
    SessionStateError,
    StoreUnavailable,
)
from .ids import IdFactory, hash_id, is_well_formed, new_id, session_ref
from .policies import Policy, build_change, parse_policy
from .principals import PrincipalIndex, principal_in
from .replica import ReplicaStats, ReplicaStore, Replicator
from .sealing import Secret
from .session import LIFETIME_KEY, Session
from .stores import async_twin, open_store
from .transports import Transport, transport_for
from .stores.memory import MemoryStore
from .stores.base import (
    ApplyResult,
    ApplyStatus,
    AsyncStore,
    Change,
    LoadResult,
    LoadStatus,
    LockRequest,
    NewRecord,
    Record,
    RecordInfo,
    RecordKey,
    Store,
    Touch,
)

__all__ = ["CommitOutcome", "SessionManager"]

log = logging.getLogger("shoal")

_ABSENT: Final = LoadResult(LoadStatus.ABSENT)
# The request path's enum members, read once: on Python 3.11 each
# ``LoadStatus.X`` runs EnumType's lookup (~75 ns, a global ~5 ns; issue 11).
_LOADED, _INVALIDATED, _LOCKED = LoadStatus.LOADED, LoadStatus.INVALIDATED, LoadStatus.LOCKED
_OK, _GONE, _LOCK_LOST = ApplyStatus.OK, ApplyStatus.GONE, ApplyStatus.LOCK_LOST
_SERIALIZED: Final = Policy.SERIALIZED
_T = TypeVar("_T")
# Live sessions one principal may have when ``max_sessions_per_principal`` is
# not set: the index must stay bounded (docs/decisions.md); past it the oldest end.
PRINCIPAL_LIMIT = 1000


@dataclass(frozen=True, slots=True)
class CommitOutcome:
    """What the client must be told after a commit.

    ``send_id``: the id to (re)send in Set-Cookie, or None for no Set-Cookie.
    ``clear``: drop the client's cookie (logout, or an id that is not valid).
    ``replica``: the sealed session to send in the replica cookie(s), if any.
    ``clear_replica``: drop the client's replica cookies.
    """

    send_id: str | None = None
    clear: bool = False
    replica: str | None = None
    clear_replica: bool = False


_SEND_NOTHING: Final = CommitOutcome()  # immutable: one shared by every such commit


@dataclass(slots=True)
class _Handle:
    """The manager's bookkeeping for one open session."""

    policy: Policy
    client_id: str | None  # the id the client sent, when well-formed
    presented: bool  # the client sent an id, well-formed or not (clear it if it names nothing)
    # What its steps run on, (SESSION, BASE): the manager's store, or this
    # request's view through its replica. ``stores`` for ``run`` (kept off
    # the event loop for a session of ``abegin``), ``astores`` for ``arun``
    # (None for a session of ``begin``).
    stores: tuple[Any, Any]
    astores: tuple[Any, Any] | None
    view: ReplicaStore | None
    key: RecordKey | None = None  # set once a stored record was loaded
    lease_token: str | None = None
    touched: bool = False
    redirected: bool = False  # reached through a rotated id's pointer: resend the new id


class _Opened:
    """``manager.open()``: begin on enter; commit on a clean exit, roll back on any error.

    ``with`` runs the steps on the sync store, ``async with`` awaits them on
    its async twin. A class rather than a ``@contextmanager`` generator: no
    generator and no ``contextlib`` wrapper built per request (issue 11).
    """

    __slots__ = ("_args", "_manager", "_session")

    def __init__(
        self,
        manager: SessionManager,
        session_id: str | None,
        read_only: bool,
        policy: str | Policy | None,
    ) -> None:
        self._manager = manager
        self._args = (session_id, read_only, policy)
        self._session: Session | None = None

    def _entered(self, session: Session) -> Session:
        if self._session is not None:
            raise SessionStateError("a manager.open() block can be entered once")
        session._end_where = "at the end of its `with manager.open()` block"
        session._end_fix = "write inside the with block"
        self._session = session
        return session

    def __enter__(self) -> Session:
        session_id, read_only, policy = self._args
        manager = self._manager
        session = manager._session(manager._handle(session_id, policy, None, False), read_only)
        session._meta()  # begin(lazy=False)
        return self._entered(session)

    def __exit__(self, exc_type: type[BaseException] | None, *_: object) -> None:
        manager = self._manager
        (manager.commit if exc_type is None else manager.rollback)(self._opened())

    async def __aenter__(self) -> Session:
        session_id, read_only, policy = self._args
        session = await self._manager.abegin(session_id, read_only=read_only, policy=policy)
        session._ensure()  # no id: made now, with no store call
        return self._entered(session)

    async def __aexit__(self, exc_type: type[BaseException] | None, *_: object) -> None:
        manager = self._manager
        await (manager.acommit if exc_type is None else manager.arollback)(self._opened())

    def _opened(self) -> Session:
        assert self._session is not None
        return self._session


def _serialize(session: Session) -> None:
    """``session.lock()``: the request's policy becomes serialized before its load."""
    handle: _Handle = session._handle  # type: ignore[attr-defined]
    handle.policy = _SERIALIZED


class SessionManager:
    """Sessions of one application on one store.

    ``store`` is a URL, a store object, or None for the embedded default
    (``$SHOAL_STORE``, else SQLite in the data directory, see ``shoal.config``).

    ``replica=True`` also hands each client a sealed copy of its session
    (``shoal.replica``, needs ``secret_keys``); ``replica="only"`` keeps
    sessions in that copy alone, with no store (stateless cookie sessions).

    ``max_session_bytes`` (1 MiB) and ``max_keys`` (1000) bound one session,
    as the store keeps it (keys and encoded values, shoal's own included): a
    ``set`` over either is an ``EncodeError`` naming the key and the limit;
    None turns a limit off (docs/security.md).

    ``rotation_grace`` (30 s): after ``rotate()`` the old id still leads to
    the new session for that long, then is dead; 0 kills it at once
    (``shoal._rotation``, docs/security.md).

    ``idle_timeout`` is each session's lifetime after its last save or touch,
    unless the session has one of its own (``Session.set_lifetime``, what
    Django's ``set_expiry`` uses); ``touch_interval=None`` makes reads never
    extend a session (Django's behaviour: only saves do).

    ``transport`` (``shoal.transports``) carries the id for every middleware
    and adapter of this manager: the cookie by default, ``HeaderTransport``
    for API clients, ``CallableTransport`` for any other scheme.

    ``cookie`` is a ``CookieOptions`` or a dict of its fields. Every argument
    is checked here (``shoal._settings``): a bad one is a ``ConfigError``
    naming the fix, never an error at the first request.

    Cluster (docs/cluster.md): ``node_id`` names this process (default
    ``host-pid-random``); ``events=True`` sends session events through the
    store's own channel to every node (set it on every node); listeners
    (``add_listener``, ``@listener``) get them. ``near_cache`` (a size, or a
    ``NearCache``) serves ``read_only`` opens from process memory; it needs
    ``events=True`` on every node. ``metrics=True`` records Prometheus
    metrics (``shoal[metrics]``). ``event_values=False`` keeps the ended
    session's values out of the channel (listeners elsewhere then get none).
    """

    def __init__(
        self,
        store: str | Store | None = None,
        *,
        app_id: str = "default",
        policy: str | Policy = "merge",
        secret_keys: Sequence[str | bytes | Secret] | None = None,
        idle_timeout: float = 1800,
        absolute_timeout: float = 7 * 86400,
        touch_interval: float | None = 60,
        grace: float = 120,
        cookie: CookieOptions | Mapping[str, Any] | None = None,
        lock_timeout: float = 10.0,
        lock_lease: float = 30.0,
        node_id: str | None = None,
        codec: Codec | None = None,
        clock: Clock | None = None,
        id_factory: IdFactory | None = None,
        replica: bool | Literal["only"] = False,
        replica_max_bytes: int = 6144,
        max_session_bytes: int | None = 1024 * 1024,
        max_keys: int | None = 1000,
        max_sessions_per_principal: int | None = None,
        rotation_grace: float = 30,
        events: bool = False,
        near_cache: int | NearCache | None = None,
        metrics: bool = False,
        event_values: bool = True,
        transport: Transport | None = None,
    ) -> None:
        checked = check_manager_settings(
            store=store, app_id=app_id, secret_keys=secret_keys, idle_timeout=idle_timeout,
            absolute_timeout=absolute_timeout, touch_interval=touch_interval, grace=grace,
            cookie=cookie, lock_timeout=lock_timeout, lock_lease=lock_lease, node_id=node_id,
            clock=clock, id_factory=id_factory, replica=replica,
            replica_max_bytes=replica_max_bytes,
        )  # fmt: skip
        limits = (
            size_limit("max_session_bytes", max_session_bytes, "1024 * 1024"),
            size_limit("max_keys", max_keys, "1000"),
        )
        per_principal = size_limit("max_sessions_per_principal", max_sessions_per_principal, "5")
        chosen_policy = parse_policy(policy)
        self.replica = replica
        self._replicator = (
            Replicator(
                app_id=app_id,
                secret_keys=secret_keys or (),
                max_bytes=checked.replica_max_bytes,
                idle_timeout=checked.idle_timeout,
            )
            if replica
            else None
        )
        # The URL the store was opened from: its async twin is opened from it too.
        self._store_url: str | None = None
        if self._replicator is not None and replica == "only":
            self.store: Store = MemoryStore("replica:only")  # a placeholder: holds nothing
        elif store is None or isinstance(store, str):
            self._store_url = default_store_url() if store is None else store
            self.store = open_store(self._store_url)
        else:
            self.store = store
        self._astore: AsyncStore | None = None  # made at the first async request
        self._astore_lock = threading.Lock()
        self.app_id = app_id
        self.policy = chosen_policy
        self._secret_keys = tuple(secret_keys or ())
        self.idle_timeout = checked.idle_timeout
        self.absolute_timeout = checked.absolute_timeout
        self.touch_interval = checked.touch_interval
        self.grace = checked.grace
        self.cookie = checked.cookie
        self.lock_timeout = checked.lock_timeout
        self.lock_lease = checked.lock_lease
        self.codec: Codec = codec or JsonCodec()
        self.clock: Clock = clock or system_clock
        self._hub = _make_hub(self, node_id, events, near_cache, metrics, event_values)
        if self._replicator is not None:
            self._replicator.on_restored = self._restored
            self._replicator.node_id = lambda: self.node_id
        self._new_id: IdFactory = id_factory or new_id
        # Refused at ``set`` with an EncodeError naming the key (shoal.session).
        self.max_session_bytes, self.max_keys = limits
        self.max_sessions_per_principal = per_principal
        # Sessions by user (shoal.principals): records of the store itself.
        self._principals = PrincipalIndex(
            app_id=app_id,
            window=self.absolute_timeout,
            codec=self.codec,
            limit=per_principal if per_principal is not None else PRINCIPAL_LIMIT,
        )
        self.rotation_grace = _rotation.check_rotation_grace(rotation_grace)
        # How ids travel (shoal.transports); None: the cookie. A middleware's
        # own ``transport=`` wins over it.
        self.transport: Transport | None = None
        self.transport = transport_for(self, transport) if transport is not None else None
        # The session's callbacks, bound once: methods that find the request's
        # handle on the session, so a request builds no closure and no bound
        # method for them (issue 11, docs/benchmarks.md).
        self._hooks = (self._load, self._renew, self._consume, self._aconsume, self._arenew)

    def __repr__(self) -> str:
        keys = f", {len(self._secret_keys)} secret keys" if self._secret_keys else ""
        replica = f", replica={self.replica!r}" if self.replica else ""
        return (
            f"<SessionManager app_id={self.app_id!r} store={self.store.url!r} "
            f"policy={self.policy.value}{keys}{replica}>"
        )

    @property
    def replica_stats(self) -> ReplicaStats | None:
        """Counters of replicas sealed, skipped, restored, served (None when off)."""
        return self._replicator.stats if self._replicator is not None else None

    # -- opening -----------------------------------------------------------

    def open(
        self,
        session_id: str | None = None,
        *,
        read_only: bool = False,
        policy: str | Policy | None = None,
    ) -> _Opened:
        """Load (and lock) a session; commit on success, roll back on error.

        ``with manager.open(id) as session:`` in sync code, ``async with
        manager.open_async(id) as session:`` in async code (the same
        algorithm, awaited on the store's async twin). An unknown, expired or
        malformed ``session_id`` yields a new session with a fresh id: a
        client-chosen id is never adopted. After the block the session is a
        read-only snapshot of what was committed (``id`` is the new one after
        ``rotate()``); a write to it raises ``SessionStateError``. Nothing is
        loaded before the block enters.
        """
        return _Opened(self, session_id, read_only, policy)

    open_async = open
    """``async with manager.open_async(...)``: ``open`` for async code (one object serves both)."""

    def _handle(
        self,
        session_id: str | None,
        policy: str | Policy | None,
        replica: str | None,
        aio: bool,
    ) -> _Handle:
        """The bookkeeping of one request, with the stores its steps run on."""
        chosen = self.policy if policy is None else parse_policy(policy)
        base: Any = self._async_store() if aio else self.store
        view: ReplicaStore | None = None
        if self._replicator is not None:
            view = self._replicator.view(None if self.replica == "only" else self.store.url, replica)
        stores = (view if view is not None else base, base)
        if aio:
            # A sync call on this session (from a worker thread) uses the sync store.
            guarded = OffLoop(self.store)
            sync_stores = (view if view is not None else guarded, guarded)
        return _Handle(
            policy=chosen,
            client_id=session_id if is_well_formed(session_id) else None,
            presented=bool(session_id),
            stores=sync_stores if aio else stores,
            astores=stores if aio else None,
            view=view,
        )

    def begin(
        self,
        session_id: str | None = None,
        *,
        read_only: bool = False,
        policy: str | Policy | None = None,
        lazy: bool = True,
        replica: str | None = None,
    ) -> Session:
        """A session that loads on first use (``lazy``) or now; pair with commit/rollback.

        ``replica`` is the client's sealed copy (joined chunks), when replicas are on.
        """
        session = self._session(self._handle(session_id, policy, replica, aio=False), read_only)
        if not lazy:
            session._ensure()
        return session

    async def abegin(
        self,
        session_id: str | None = None,
        *,
        read_only: bool = False,
        policy: str | Policy | None = None,
        replica: str | None = None,
    ) -> Session:
        """``begin`` for async code; pair with ``acommit``/``arollback``.

        A session named by an id is loaded (and locked under ``serialized``)
        here, awaited: a lazy load would be a blocking ``__getitem__``. A
        session without an id needs no store to load, so it is made on first
        use, as in ``begin``. ``session.lock()`` is therefore only possible
        before ``abegin`` returns: pass ``policy="serialized"`` instead.
        """
        session = self._async_session(
            session_id, read_only=read_only, policy=policy, replica=replica
        )
        await self._aload(session)
        return session

    def _async_session(
        self,
        session_id: str | None,
        *,
        read_only: bool = False,
        policy: str | Policy | None = None,
        replica: str | None = None,
    ) -> Session:
        """A session for async code, not loaded yet (``abegin`` is this, then ``_aload``).

        The middlewares make it first, so that a failed load is answered
        (503) with the session in hand to roll back.
        """
        return self._session(self._handle(session_id, policy, replica, aio=True), read_only)

    async def _aload(self, session: Session) -> None:
        """Load a session named by an id now, awaited; one without an id needs no store."""
        handle: _Handle = session._handle  # type: ignore[attr-defined]
        if handle.client_id is not None and not session.loaded:
            await arun(self._load_steps(session), _async_stores(handle, "load"))
            session._loader = None

    def _session(self, handle: _Handle, read_only: bool) -> Session:
        hooks = self._hooks
        session = Session(
            codec=self.codec,
            clock=self.clock,
            read_only=read_only,
            loader=hooks[0],
            on_lock=_serialize,
            on_renew=hooks[1],
            max_session_bytes=self.max_session_bytes,
            max_keys=self.max_keys,
        )
        session._handle = handle  # type: ignore[attr-defined]
        if self.replica != "only":
            session._consume, session._aconsume = hooks[2], hooks[3]
        session._on_arenew = hooks[4]
        return session

    def _async_store(self) -> AsyncStore:
        """The async twin of the manager's store, made at the first async request."""
        astore = self._astore
        if astore is None:
            with self._astore_lock:
                astore = self._astore
                if astore is None:
                    astore = self._astore = async_twin(self.store, self._store_url)
        return astore

    # The one place the sync API meets the store: ``run`` on the handle's
    # stores. The contract suite's async driver swaps both (tests/_async_driver.py).
    _runner = staticmethod(run)

    def _base_stores(self) -> tuple[Any, Any]:
        """What a step that needs no request runs on (the principal index): the store."""
        return (self.store, self.store)

    # -- loading, as steps (shoal._steps): one algorithm for begin and abegin --------

    def _load(self, session: Session) -> None:
        """The session's lazy loader: the load steps on the sync store."""
        handle: _Handle = session._handle  # type: ignore[attr-defined]
        self._runner(self._load_steps(session), handle.stores)

    def _load_steps(self, session: Session) -> Steps[None]:
        handle: _Handle = session._handle  # type: ignore[attr-defined]
        now = self.clock()
        result = _ABSENT
        # First touched after its commit (a read in the body): loaded read-only,
        # without lock or touch, since no response can carry a cookie any more.
        late = session._closed
        touch: Touch | None = None
        if handle.client_id is not None:
            key = RecordKey(self.app_id, hash_id(handle.client_id))
            touch = (
                None
                if late or self.touch_interval is None
                else Touch(now - self.touch_interval, self.idle_timeout)
            )
            locked = handle.policy is _SERIALIZED and not session.read_only and not late
            near = self._hub.near_cache is not None and session.read_only
            if locked:
                result = yield from self._load_locked(key, touch, handle)
            elif near or self._hub.metrics is not None:
                result = yield from self._load_key(key, handle, now, touch, locked=False, near=near)
            else:  # the common load, without a generator of its own
                result = yield SESSION.load(key, now=now, touch=touch)
            if result.status is _INVALIDATED:
                # Only a tombstone can be a rotated id: the pointer is never
                # looked up on the path of a live session.
                moved = yield from self._moved_to(handle.client_id, now)
                if moved is not None:
                    key = RecordKey(self.app_id, hash_id(moved))
                    result = yield from self._load_key(
                        key, handle, now, touch, locked=locked, near=near
                    )
                    if result.status is _LOADED:
                        handle.client_id, handle.redirected = moved, True
            if result.status is _LOADED:
                handle.key = key
        record = result.record
        if record is not None and LIFETIME_KEY in record.fields and _ended(
            self.codec, record.fields, now
        ):
            # Its own lifetime (set_lifetime(until=...)) passed, though a
            # touch kept the record: as expired, it is never loaded.
            yield from self._release(handle)
            handle.key, record = None, None
        if record is None:
            absolute = now + self.absolute_timeout
            session._populate(
                session_id=self._new_id(),
                is_new=True,
                version=0,
                created=now,
                accessed=now,
                expires=min(now + self.idle_timeout, absolute),
                fields={},
                field_versions={},
            )
            return
        assert handle.client_id is not None
        handle.touched = record.accessed == now
        if touch is not None and handle.touched:
            record = yield from self._retouch(record, handle, now)
        session._populate(
            session_id=handle.client_id,
            is_new=False,
            version=record.version,
            created=record.created,
            accessed=record.accessed,
            expires=record.expires,
            fields=record.fields,
            field_versions=record.field_versions,
        )

    def _load_key(
        self,
        key: RecordKey,
        handle: _Handle,
        now: float,
        touch: Touch | None,
        *,
        locked: bool,
        near: bool,
    ) -> Steps[LoadResult]:
        """One load of ``key``: under a lease, through the near cache, or plain."""
        if locked:
            return (yield from self._load_locked(key, touch, handle))
        if near:
            return (yield from self._load_near(key, now, touch))
        op = SESSION.load(key, now=now, touch=touch)
        result: LoadResult = yield from self._measured("load", op)  # None metrics: just the load
        return result

    def _load_near(self, key: RecordKey, now: float, touch: Touch | None) -> Steps[LoadResult]:
        """A ``read_only`` load through the near cache: no store call while fresh."""
        self._hub.check_fork()  # a forked worker never serves its parent's entries
        cache = self._hub.near_cache
        assert cache is not None
        cached = cache.get(key, now=now)
        if cached is not None:
            if self._hub.metrics is not None:
                self._hub.metrics.inc("near_cache_hits")
            return LoadResult(_LOADED, cached)
        ticket = cache.ticket()
        result: LoadResult = yield from self._measured(
            "load", SESSION.load(key, now=now, touch=touch)
        )
        if result.record is not None:
            cache.put(key, result.record, ticket)
        return result

    def _measured(self, operation: str, op: Op) -> Steps[Any]:
        """The answer to ``op``, its latency and failure recorded when metrics are on."""
        metrics = self._hub.metrics
        if metrics is None:
            return (yield op)
        started = time.perf_counter()
        try:
            result = yield op
        except StoreUnavailable:
            metrics.inc("store_errors", operation=operation)
            raise
        metrics.observe(operation, time.perf_counter() - started)
        status = getattr(result, "status", None)
        if operation == "load" and status is not None:
            metrics.inc("loads", status=status.value)
        elif (operation == "save" and status is _OK) or (
            operation == "create" and result is True
        ):
            metrics.inc("saves")
        return result

    # -- cluster: node id, listeners, events -----------------------------------

    @property
    def node_id(self) -> str:
        """This process's name in lock tokens, events and log lines."""
        return self._hub.node_id

    @property
    def near_cache(self) -> NearCache | None:
        """The near cache when on (``near_cache=`` and a store with an events channel)."""
        return self._hub.near_cache

    @property
    def events(self) -> Hub:
        """The cluster hub: its channel, counters of events sent, received and missed."""
        return self._hub

    def add_listener(
        self, listener: Listener, events: Collection[str] | None = None, *, values: bool = False
    ) -> None:
        """Call ``listener(event)`` on ``events`` (all when None); see docs/cluster.md.

        ``values=True``: on ``invalidated`` and ``expired`` the event also
        holds the ended session's values (``event.values``). A listener that
        raises is logged and never breaks the request. With ``events=True``
        it also hears every other node's events, on the listener thread.
        """
        self._hub.add_listener(listener, events, values=values)

    def remove_listener(self, listener: Listener) -> None:
        """Stop calling ``listener``."""
        self._hub.listeners.remove(listener)

    def listener(
        self, *events: str, values: bool = False
    ) -> Callable[[Listener], Listener]:
        """Decorator form of ``add_listener``: ``@manager.listener("invalidated", values=True)``."""

        def register(fn: Listener) -> Listener:
            self.add_listener(fn, events or None, values=values)
            return fn

        return register

    def _emit(
        self,
        name: str,
        session: Session | None,
        id_hash: str,
        *,
        principal: str | None = None,
        **kw: Any,
    ) -> Steps[None]:
        """Raise ``name`` when anything listens (the only cost otherwise: this check).

        The hub publishes on the store's channel: a blocking call, so it is
        an operation of its own (a store thread under ``arun``).
        """
        if self._hub.active:
            if principal is None and session is not None:
                found = getattr(session, "principal", None)
                principal = None if found is None else str(found)
            yield call(self._hub.emit, name, id_hash, principal=principal, **kw)

    def _restored(self, key: RecordKey) -> None:
        if self._hub.metrics is not None:
            self._hub.metrics.inc("replica_restores")
        if self._hub.active:
            self._hub.emit("restored", key.id_hash, principal=None)

    def _retouch(self, record: Record, handle: _Handle, now: float) -> Steps[Record]:
        """Touch again with the session's own lifetime, when it has one.

        The load's touch (one round trip) extends by the manager's
        ``idle_timeout``: the store cannot know the lifetime the session
        keeps inside its data (``Session.set_lifetime``). When that lifetime
        differs, a second touching load sets the expiry by it, so a read
        never cuts a long-lived session (Flask's ``permanent``) to the
        manager's idle timeout, nor keeps a short-lived one longer. It costs
        a round trip once per ``touch_interval``, only for such sessions.
        A touch changes no version and no lease, so a serialized holder
        elsewhere is not fenced out. Rejected: an empty ``apply`` (it bumps
        the version, fencing out a lease holder), and stores reading the
        lifetime out of the record (they never decode session data).
        """
        own = _own_idle_timeout(self.codec, record.fields, now)
        if own is None or own == self.idle_timeout or handle.key is None:
            return record
        # Accessed just now by the first touch: "accessed before now + 1" touches again.
        result: LoadResult = yield SESSION.load(handle.key, now=now, touch=Touch(now + 1, own))
        if result.status is not _LOADED or result.record is None:
            return record  # ended meanwhile: the commit finds out
        return replace(record, expires=result.record.expires)

    def _load_locked(
        self, key: RecordKey, touch: Touch | None, handle: _Handle
    ) -> Steps[LoadResult]:
        """Load with the lease; wait for the holder up to ``lock_timeout``."""
        token = f"{self.node_id}:{secrets.token_hex(8)}"
        lock = LockRequest(token, self.lock_lease)
        started = time.monotonic()
        waits = 0
        metrics = self._hub.metrics
        while True:
            now = self.clock()
            op = SESSION.load(key, now=now, touch=touch, lock=lock)
            result: LoadResult = (
                (yield op) if metrics is None else (yield from self._measured("load", op))
            )
            if result.status is not _LOCKED:
                if result.status is _LOADED:
                    handle.lease_token = token
                if metrics is not None and waits:
                    metrics.inc("lock_wait_seconds", time.monotonic() - started)
                return result
            waited = time.monotonic() - started
            waits += 1
            if metrics is not None and waits == 1:
                metrics.inc("lock_waits")
            remaining = self.lock_timeout - waited
            if remaining <= 0:
                if metrics is not None:
                    metrics.inc("lock_timeouts")
                    metrics.inc("lock_wait_seconds", waited)
                detail = {"waited": round(waited, 3)}
                yield from self._emit("lock_timeout", None, key.id_hash, detail=detail)
                raise LockTimeout(waited, session_ref(key.id_hash))
            holder_left = max(0.0, (result.locked_until or now) - now)
            yield SESSION.wait_unlocked(key, min(remaining, max(holder_left, 0.001)))

    def renew_lock(self, session: Session) -> None:
        """Extend the lease ``session`` holds by ``lock_lease`` from now.

        ``LockLost`` when it was lost; nothing to do when it holds none. Same
        as ``session.renew_lock()``; ``await session.arenew_lock()`` in async code.
        """
        session.renew_lock()

    def _renew(self, session: Session) -> None:
        handle: _Handle = session._handle  # type: ignore[attr-defined]
        self._runner(self._renew_steps(handle), handle.stores)

    async def _arenew(self, session: Session) -> None:
        handle: _Handle = session._handle  # type: ignore[attr-defined]
        await arun(self._renew_steps(handle), _async_stores(handle, "arenew_lock"))

    def _renew_steps(self, handle: _Handle) -> Steps[None]:
        if handle.lease_token is None or handle.key is None:
            return
        renewed = yield SESSION.renew(
            handle.key, handle.lease_token, now=self.clock(), lease=self.lock_lease
        )
        if not renewed:
            # The token is kept: the save will be refused (fenced) as well,
            # rather than falling back to an unfenced compare-and-set.
            raise LockLost(session_ref(handle.key.id_hash))

    # -- closing -----------------------------------------------------------

    def commit(self, session: Session) -> CommitOutcome:
        """Save what the request changed, release any lock; tell what to send."""
        handle: _Handle = session._handle  # type: ignore[attr-defined]
        return self._runner(self._commit_steps(session, handle), handle.stores)

    async def acommit(self, session: Session) -> CommitOutcome:
        """``commit`` for a session from ``abegin``: the same steps, awaited."""
        handle: _Handle = session._handle  # type: ignore[attr-defined]
        return await arun(self._commit_steps(session, handle), _async_stores(handle, "commit"))

    def _commit_steps(self, session: Session, handle: _Handle) -> Steps[CommitOutcome]:
        if not session.loaded:
            session._close(committed=True)
            return CommitOutcome()
        committed = False
        try:
            outcome = yield from self._save(session, handle)
            if self._replicator is not None:
                assert handle.view is not None
                wire, clear = self._replicator.outgoing(
                    handle.view, session.id, ended=outcome.clear, now=self.clock()
                )
                outcome = replace(outcome, replica=wire, clear_replica=clear)
            committed = True
            return outcome
        finally:
            # A failed commit saved nothing: the session then reads as rolled back.
            session._close(committed=committed)

    def _save(self, session: Session, handle: _Handle) -> Steps[CommitOutcome]:
        now = self.clock()
        key = handle.key
        # The client sent an id (malformed, unknown or ended) that loaded
        # nothing: clear its cookie, or the browser sends it forever.
        stale_client_id = handle.presented and key is None
        if session._invalidated:
            # Logout always wins, lease or not; the tombstone drops any lease.
            # It goes first, so a failure below never leaves the old id alive.
            if key is not None:
                loaded = session._at_load[0] if session._at_load else None
                yield from self._end_session(
                    SESSION, key, now=now, session=session,
                    principal=principal_in(self.codec, loaded),  # invalidate() emptied it
                )  # fmt: skip
            handle.lease_token = None
            session._detect_mutations()
            if session._encoded_fields():
                # Written after invalidate(): a fresh session under a new id,
                # with no lease and a lifetime of its own.
                return (yield from self._create(session, handle, now, fresh=True))
            return CommitOutcome(clear=handle.presented)
        if not session.modified and not session._refresh:
            yield from self._release(handle)
            if stale_client_id:
                return CommitOutcome(clear=True)
            resend = key is not None and (
                handle.redirected or (handle.touched and self.cookie.max_age is not None)
            )
            return CommitOutcome(send_id=session.id) if resend else _SEND_NOTHING
        if key is None or session._rotated:
            return (yield from self._create(session, handle, now))
        change = build_change(
            handle.policy,
            session,
            idle_timeout=session._idle_timeout(self.idle_timeout, now),
            lease_token=handle.lease_token,
        )
        op = SESSION.apply(key, change, now=now)
        result: ApplyResult = (
            (yield op) if self._hub.metrics is None else (yield from self._measured("save", op))
        )
        if result.status is _OK:
            handle.lease_token = None  # released by the apply
            if self._hub.near_cache is not None:
                yield from self._emit("updated", session, key.id_hash)
            resend = self.cookie.max_age is not None or handle.redirected
            return CommitOutcome(send_id=session.id) if resend else _SEND_NOTHING
        if result.status is _GONE:
            # Rotated meanwhile by another request: the write lands on the new session.
            moved = yield from self._apply_moved(session, handle, change, now)
            if moved is not None:
                return moved
            # Invalidated or expired meanwhile: never re-create it.
            log.info(
                "node %s: session %s ended during the request; its changes were dropped",
                self.node_id, session_ref(key.id_hash),
            )  # fmt: skip
            return CommitOutcome(clear=True)
        yield from self._release(handle)
        if result.status is _LOCK_LOST:
            raise LockLost(session_ref(key.id_hash))
        if self._hub.metrics is not None:
            self._hub.metrics.inc("conflicts")
        detail = {"keys": list(result.conflicts)}
        yield from self._emit("conflict", session, key.id_hash, detail=detail)
        raise ConflictError(result.conflicts, session_ref(key.id_hash))

    def _create(
        self, session: Session, handle: _Handle, now: float, *, fresh: bool = False
    ) -> Steps[CommitOutcome]:
        """Store a new session, move a rotated one to a new id, or (``fresh``) store
        what was written after ``invalidate()`` under a new id."""
        fields = session._encoded_fields()
        moving = handle.key is not None and not fresh
        if not moving:
            absolute = now + self.absolute_timeout
            created = now
        else:
            absolute = session.created + self.absolute_timeout
            created = session.created
        record = NewRecord(
            created=created,
            expires=min(now + session._idle_timeout(self.idle_timeout, now), absolute),
            absolute_expires=absolute,
            fields=fields,
        )
        candidate = session.id if handle.key is None and not fresh else self._new_id()
        for _ in range(3):  # a collision of 256-bit ids would be a broken RNG
            new_key = RecordKey(self.app_id, hash_id(candidate))
            if (yield from self._measured("create", SESSION.create(new_key, record, now=now))):
                break
            candidate = self._new_id()
        else:
            raise ConfigError("the id factory keeps returning ids that already exist")
        session._id = candidate
        session._created, session._expires = created, record.expires
        if fresh:
            session._is_new, session._version, session._accessed = True, 0, now
        if moving:
            assert handle.key is not None
            grace = session._rotation_grace
            grace = self.rotation_grace if grace is None else grace
            # Without a store (replica="only") the old cookie stays valid anyway.
            if grace > 0 and handle.client_id is not None and self.replica != "only":
                # Before the tombstone: whoever finds it finds the pointer too.
                yield from _rotation.write_pointer(
                    SESSION, self.app_id, handle.client_id, candidate, now=now, grace=grace
                )
            if handle.policy is Policy.MERGE:
                yield from self._catch_up(
                    session, handle, RecordKey(self.app_id, hash_id(candidate)), now
                )
            # The tombstone also drops this request's lease on the old id.
            yield SESSION.invalidate(handle.key, now=now)
            handle.lease_token = None
            yield from self._emit(
                "rotated", session, handle.key.id_hash,
                detail={"new_ref": session_ref(new_key.id_hash)},
            )  # fmt: skip
        else:
            yield from self._emit("created", session, new_key.id_hash)
        principal = session.principal
        if principal is not None:
            yield from self._index(
                principal,
                RecordKey(self.app_id, hash_id(candidate)),
                created=created,
                now=now,
                replaces=handle.key if moving else None,
            )
        return CommitOutcome(send_id=candidate)

    # -- sessions by principal -------------------------------------------------

    def _end_session(
        self,
        store: StoreRef,
        key: RecordKey,
        *,
        now: float,
        session: Session | None = None,
        principal: str | None = None,
    ) -> Steps[bool]:
        """End one session: a tombstone, so no late save or replica brings it back.

        The one call site of every ending: ``session.invalidate()``,
        ``invalidate_all`` and ``max_sessions_per_principal``. It raises the
        ``invalidated`` event (which also drops near-cache entries on every
        node); with the values as loaded when ``session`` is this request's.
        A session ended from outside (``invalidate_all``, the excess of
        ``max_sessions_per_principal``) is read first when events carry
        values, so a listener that asked sees what it held (a write landing
        between that read and the tombstone is not in them).
        """
        fields: Mapping[str, bytes] | None = (
            session._at_load[0] if session is not None and session._at_load else None
        )
        if session is None and self._hub.active and self._hub.send_values:
            found: LoadResult = yield store.load(key, now=now)
            fields = found.record.fields if found.record is not None else None
        ended: bool = yield store.invalidate(key, now=now)
        if ended:
            yield from self._emit(
                "invalidated", session, key.id_hash, fields=fields, principal=principal
            )
        return ended

    def _index(
        self,
        principal: str,
        key: RecordKey,
        *,
        created: float,
        now: float,
        replaces: RecordKey | None,
    ) -> Steps[None]:
        """Put a just-stored session into its principal's index; end the excess."""
        if self.replica == "only":
            return  # no store: nothing to index (sessions_of says so)
        excess = yield from self._principals.add(
            principal, key, created=created, now=now, replaces=replaces
        )
        for old in excess:
            yield from self._end_session(BASE, old, now=now, principal=principal)
        if excess:
            yield from self._principals.remove(principal, excess, now=now)
            log.info(
                "node %s: principal over max_sessions_per_principal: ended %d oldest session(s)",
                self.node_id, len(excess),
            )  # fmt: skip

    def _check_indexed(self, principal: object) -> str:
        if self.replica == "only":
            raise ConfigError(
                "sessions by principal need a store: replica='only' keeps sessions in the "
                "client alone; use replica=True with a store"
            )
        if isinstance(principal, bool) or not isinstance(principal, (str, int)):
            raise TypeError(f"a principal is a str or an int, not {principal!r}")
        return str(principal)

    def sessions_of(self, principal: str | int) -> list[RecordInfo]:
        """The live sessions of ``principal`` (``session.principal``), oldest first.

        Each is named by its id hash (``info.key``), never its id. Dead entries
        met on the way are dropped from the index. ``asessions_of`` in async code.
        """
        return self._runner(self._sessions_of(principal), self._base_stores())

    async def asessions_of(self, principal: str | int) -> list[RecordInfo]:
        """``sessions_of``, awaited on the async store."""
        astore = self._async_store()
        return await arun(self._sessions_of(principal), (astore, astore))

    def _sessions_of(self, principal: str | int) -> Steps[list[RecordInfo]]:
        user = self._check_indexed(principal)
        return (yield from self._principals.sessions(user, now=self.clock()))

    def invalidate_all(self, principal: str | int) -> int:
        """Log ``principal`` out everywhere: end every live session of theirs; the count.

        Each ends as ``session.invalidate()`` does, with a tombstone in the
        store, so the next request on any node, and any replica, finds it
        ended. A login that commits while this runs may survive it.
        ``ainvalidate_all`` in async code.
        """
        return self._runner(self._invalidate_all(principal), self._base_stores())

    async def ainvalidate_all(self, principal: str | int) -> int:
        """``invalidate_all``, awaited on the async store."""
        astore = self._async_store()
        return await arun(self._invalidate_all(principal), (astore, astore))

    def _invalidate_all(self, principal: str | int) -> Steps[int]:
        user = self._check_indexed(principal)
        now = self.clock()
        infos = yield from self._principals.sessions(user, now=now)
        ended = 0
        for info in infos:
            if (yield from self._end_session(BASE, info.key, now=now, principal=user)):
                ended += 1
        yield from self._principals.remove(user, [info.key for info in infos], now=now)
        return ended

    def _catch_up(
        self, session: Session, handle: _Handle, new_key: RecordKey, now: float
    ) -> Steps[None]:
        """Merge: carry onto the new record what others saved on the old one since our load.

        Without it, a write to another key made while the rotating request
        ran would be lost with the old record. What is saved between this
        re-read and the tombstone (a few store calls later) still is: the
        lease of ``serialized`` is the policy that closes that window.
        """
        assert handle.key is not None
        loaded: LoadResult = yield SESSION.load(handle.key, now=now)
        current = loaded.record
        if current is None:
            return
        seen, mine = session._field_versions(), session.keys_written | session.keys_deleted
        fields, versions = current.fields, current.field_versions
        changed = {
            k: v for k, v in fields.items() if k not in mine and versions.get(k) != seen.get(k)
        }
        gone = [k for k in seen if k not in fields and k not in mine]
        if changed or gone:
            change = Change(
                idle_timeout=session._idle_timeout(self.idle_timeout, now), set=changed,
                delete=gone,
            )  # fmt: skip
            yield SESSION.apply(new_key, change, now=now)

    def _moved_to(self, session_id: str | None, now: float) -> Steps[str | None]:
        """The id a rotated ``session_id`` now lives under, within its grace; else None.

        Follows up to ``MAX_HOPS`` pointers (rotated again within the grace).
        """
        moved = None
        for _ in range(_rotation.MAX_HOPS):
            if session_id is None:
                break
            session_id = yield from _rotation.follow(SESSION, self.app_id, session_id, now=now)
            moved = session_id or moved
        return moved

    def _apply_moved(
        self, session: Session, handle: _Handle, change: Change, now: float
    ) -> Steps[CommitOutcome | None]:
        """Save ``change`` onto the session the client's id was rotated to, if it was.

        Optimistic checks are carried over by value: a key this request read
        or wrote conflicts only when the new session holds other bytes for it
        than this request loaded (the rotation itself copied them unchanged).
        A serialized save keeps its lease token and is refused (``LockLost``):
        its lease was on the old id.
        """
        moved = yield from self._moved_to(handle.client_id, now)
        if moved is None:
            return None
        key = RecordKey(self.app_id, hash_id(moved))
        if change.expect_fields:
            current: LoadResult = yield SESSION.load(key, now=now)
            if current.record is None:
                return None
            loaded = session._at_load[0] if session._at_load is not None else (
                session._encoded_fields()
            )
            fields, versions = current.record.fields, current.record.field_versions
            conflicts = tuple(
                name for name in change.expect_fields if loaded.get(name) != fields.get(name)
            )
            if conflicts:
                raise ConflictError(conflicts, session_ref(key.id_hash))
            change = replace(
                change, expect_fields={name: versions.get(name) for name in change.expect_fields}
            )
        result: ApplyResult = yield SESSION.apply(key, change, now=now)
        if result.status is _GONE:
            return None
        if result.status is _LOCK_LOST:
            raise LockLost(session_ref(key.id_hash))
        if result.status is ApplyStatus.CONFLICT:
            raise ConflictError(result.conflicts, session_ref(key.id_hash))
        session._id, handle.client_id, handle.key = moved, moved, key
        handle.lease_token = None
        return CommitOutcome(send_id=moved)

    def rollback(self, session: Session) -> None:
        """Drop the request's changes and release any lock it holds."""
        handle: _Handle = session._handle  # type: ignore[attr-defined]
        self._runner(self._rollback_steps(session, handle), handle.stores)

    async def arollback(self, session: Session) -> None:
        """``rollback`` for a session from ``abegin``, awaited."""
        handle: _Handle = session._handle  # type: ignore[attr-defined]
        await arun(self._rollback_steps(session, handle), _async_stores(handle, "rollback"))

    def _rollback_steps(self, session: Session, handle: _Handle) -> Steps[None]:
        try:
            if session.loaded:
                yield from self._release(handle)
                if handle.key is not None:
                    yield from self._emit("rollback", session, handle.key.id_hash)
        finally:
            session._close(committed=False)

    def _release(self, handle: _Handle) -> Steps[None]:
        if handle.lease_token is not None and handle.key is not None:
            token, handle.lease_token = handle.lease_token, None
            yield SESSION.unlock(handle.key, token)

    def _consume(self, session: Session, key: str) -> bool:
        handle: _Handle = session._handle  # type: ignore[attr-defined]
        return self._runner(self._consume_steps(session, handle, key), handle.stores)

    async def _aconsume(self, session: Session, key: str) -> bool:
        handle: _Handle = session._handle  # type: ignore[attr-defined]
        stores = _async_stores(handle, "aconsume_token")
        return await arun(self._consume_steps(session, handle, key), stores)

    def _consume_steps(self, session: Session, handle: _Handle, key: str) -> Steps[bool]:
        """Delete once-only ``key`` in the store now, if it is the copy this request loaded.

        One atomic apply with ``expect_fields`` on the key, whatever the
        policy: of two consumers only one passes. It runs at once rather than
        at commit so the loser learns it before running the action.
        """
        if handle.key is None:
            return False
        change = Change(
            idle_timeout=session._idle_timeout(self.idle_timeout, self.clock()),
            delete=(key,),
            expect_fields={key: session._field_versions().get(key)},
            lease_token=handle.lease_token,
        )
        result: ApplyResult = yield SESSION.apply(handle.key, change, now=self.clock())
        if result.status is not _OK or result.version is None:
            return False
        if self._hub.near_cache is not None:
            yield from self._emit("updated", session, handle.key.id_hash)
        session._version = result.version  # keeps a serialized save's fence in step
        return True

    # -- maintenance ---------------------------------------------------------

    def purge(self, *, limit: int = 1000) -> int:
        """Delete records expired longer than ``grace``; one bounded batch.

        When an ``expired`` event has somewhere to go, a store with
        ``purge_ended`` returns what it deleted in the same atomic step and
        each of this app's sessions is announced once, from this node.
        """
        return purge_announcing(
            self.store, now=self.clock(), grace=self.grace, limit=limit,
            hub_for=self._expiry_hub if self._hub.active else None,
        )  # fmt: skip

    def _expiry_hub(self, app_id: str) -> Hub | None:
        """This manager's hub announces its own app's expired sessions, no other's."""
        return self._hub if app_id == self.app_id else None

    async def apurge(self, *, limit: int = 1000) -> int:
        """``purge`` for async code: the batch runs in a store thread, off the loop."""
        from .stores._threaded import run_in_thread

        return await run_in_thread(self.purge, limit=limit)

    def close(self) -> None:
        """Stop the cluster hub, close the store (and its async twin, if one was made)."""
        self._hub.close()
        self.store.close()

    async def aclose(self) -> None:
        """``close`` for async code: the async twin on the running loop, the rest in a thread."""
        from .stores._threaded import run_in_thread

        astore, self._astore = self._astore, None
        if astore is not None:
            await astore.aclose()
        await run_in_thread(self.close)


def _async_stores(handle: _Handle, what: str) -> tuple[Any, Any]:
    """The async stores of ``handle``; ``SessionStateError`` for a session of ``begin``."""
    if handle.astores is None:
        raise SessionStateError(
            f"{what}: this session was opened by begin()/open() for sync code; use the "
            "sync call, or open it with abegin()/open_async()"
        )
    return handle.astores


def _own_lifetime(codec: Codec, fields: Mapping[str, bytes]) -> dict[str, Any]:
    """The record's own lifetime field (``set_lifetime``), decoded; {} when it has none."""
    data = fields.get(LIFETIME_KEY)
    if data is None:
        return {}
    try:
        value = decode_field(codec, data)[0]
    except Exception:  # noqa: BLE001 - a foreign or corrupted field: no lifetime of its own
        return {}
    return value if isinstance(value, dict) else {}


def _ended(codec: Codec, fields: Mapping[str, bytes], now: float) -> bool:
    """True when the record's own fixed lifetime (``set_lifetime(until=...)``) has passed."""
    until = _own_lifetime(codec, fields).get("until")
    return isinstance(until, (int, float)) and until <= now


def _make_hub(
    manager: SessionManager,
    node_id: str | None,
    events: bool,
    near_cache: int | NearCache | None,
    metrics: bool,
    event_values: bool,
) -> Hub:
    """The manager's cluster hub; ``ConfigError`` for a near cache without events."""
    cache = NearCache(near_cache) if isinstance(near_cache, int) else near_cache
    if cache is not None and not events:
        raise ConfigError(
            "near_cache needs events=True (on every node), so that other nodes' writes "
            "and logouts drop its entries; set events=True or drop near_cache"
        )
    hub = Hub(
        app_id=manager.app_id, node_id=node_id, store=manager.store, codec=manager.codec,
        clock=manager.clock, events=events, near_cache=cache,
        metrics=metrics_for(manager.app_id, metrics), send_values=event_values,
    )  # fmt: skip
    if cache is not None and hub.channel is None:
        log.warning(
            "near_cache is off: the store %s has no events channel to keep it fresh",
            manager.store.url,
        )
        hub.near_cache = None
    return hub


def _own_idle_timeout(codec: Codec, fields: Mapping[str, bytes], now: float) -> float | None:
    """The idle timeout a touch of this record must use, or None for the manager's.

    The same reading as ``Session._idle_timeout``: a sliding lifetime as
    given, a fixed end as the time left until it.
    """
    own = _own_lifetime(codec, fields)
    if len(own) != 1:
        return None
    kind, number = next(iter(own.items()))
    if isinstance(number, bool) or not isinstance(number, (int, float)):
        return None
    if kind == "idle":
        return float(number)
    return float(number) - now if kind == "until" else None
