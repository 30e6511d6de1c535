"""Django: ``SESSION_ENGINE = "shoal.django"`` makes ``request.session`` a shoal session.

Two settings install it, and Django's own ``SessionMiddleware`` stays::

    SESSION_ENGINE = "shoal.django"
    SHOAL_STORE = "sqlite:///var/lib/app/sessions.db"   # None: $SHOAL_STORE or embedded
    SHOAL_OPTIONS = {"policy": "serialized"}            # optional SessionManager kwargs

``SessionStore`` is a ``SessionBase`` whose mapping is a ``shoal.Session``:
writes are tracked per key, so the merge (default), optimistic and
serialized policies work across processes and servers, where Django's own
backends write the whole dict (last write wins). What Django documents
holds, with the differences listed in docs/frameworks.md:

- Django's middleware sets the cookie, so ``SESSION_COOKIE_*``,
  ``SESSION_EXPIRE_AT_BROWSER_CLOSE`` and ``SESSION_SAVE_EVERY_REQUEST``
  behave as with any backend (the last through ``Session.refresh()``).
- Sessions live ``SESSION_COOKIE_AGE`` after their last save and reads do
  not extend them (``idle_timeout=SESSION_COOKIE_AGE``,
  ``touch_interval=None``), unless ``SHOAL_OPTIONS`` says otherwise.
  ``set_expiry()`` also sets the core lifetime (``Session.set_lifetime``):
  seconds slide with each save, a datetime or timedelta is a fixed end, 0
  and None use the default.
- Loading is lazy (creating a ``SessionStore`` does no I/O); an unknown key
  loads ``{}``, creates nothing and gets a new key at save. ``cycle_key()``
  and ``flush()`` act at once: the old key is dead when they return. A save
  after another request deleted the session raises ``UpdateError`` (Django's
  middleware answers 400); so does a save refused by the optimistic or
  serialized policy (``ShoalUpdateError``, with the shoal error as cause).
- A lease the serialized policy took at load is released when the request
  ends (``request_finished``), also when the view did not change the
  session and Django never calls ``save()``.
- ``clear_expired()`` purges the store, so ``manage.py clearsessions`` works.

Store errors raised while a view reads the session (``LockTimeout``,
``StoreUnavailable``: 503; ``ConflictError``, ``LockLost``: 409) become
answers, not 500s, with ``shoal.django.SessionErrorMiddleware`` in
``MIDDLEWARE`` (anywhere after ``SessionMiddleware``).
"""

from __future__ import annotations

import inspect
import logging
import threading
from collections.abc import Callable, Mapping
from contextvars import ContextVar
from datetime import datetime, timedelta
from typing import Any, Final

from asgiref.sync import sync_to_async
from django.conf import settings
from django.contrib.sessions.backends.base import CreateError, SessionBase, UpdateError
from django.core.exceptions import ImproperlyConfigured
from django.core.signals import request_finished
from django.http import HttpRequest, HttpResponse

from .cookies import name_prefix
from .errors import ConfigError, ConflictError, LockLost
from .ids import hash_id, is_well_formed, new_id
from .manager import SessionManager
from .session import Session
from .stores.base import RecordKey
from .transports import ANSWERED, error_response

__all__ = [
    "SessionErrorMiddleware",
    "SessionStore",
    "ShoalUpdateError",
    "close_managers",
    "get_manager",
]

log = logging.getLogger("shoal")

_EXPIRY_KEY: Final = "_session_expiry"  # where SessionBase keeps set_expiry()'s value
# SHOAL_OPTIONS that Django's own settings own instead.
_DJANGO_OWNS: Final = {
    "cookie": "the SESSION_COOKIE_* settings (Django's SessionMiddleware sets the cookie)",
    "replica": "nothing: Django's SessionMiddleware sends no replica cookie; drop it",
    "secret_keys": "nothing: they only seal replicas, which Django cannot carry; drop them",
}

_managers: dict[tuple[object, ...], SessionManager] = {}
_managers_lock = threading.Lock()


class ShoalUpdateError(UpdateError):  # type: ignore[misc]  # Django has no type hints
    """A save the policy refused (``ConflictError``, ``LockLost``: its ``__cause__``).

    An ``UpdateError``, so Django's ``SessionMiddleware`` answers it as a
    session interrupted by a concurrent request (400), never a 500.
    """


def _defaults() -> dict[str, Any]:
    """The manager options that make shoal behave as Django's sessions."""
    age = float(settings.SESSION_COOKIE_AGE)
    return {
        "app_id": "django",
        "idle_timeout": age,
        # Django has no absolute timeout; shoal keeps one, generous enough
        # for a "remember me" of twice the cookie age (docs/frameworks.md).
        "absolute_timeout": max(30 * 86400.0, 2 * age),
        "touch_interval": None,  # Django never extends a session on read
    }


def get_manager() -> SessionManager:
    """The ``SessionManager`` of the current settings (one per distinct configuration).

    ``ImproperlyConfigured`` names the setting to fix.
    """
    store = getattr(settings, "SHOAL_STORE", None)
    options = getattr(settings, "SHOAL_OPTIONS", None) or {}
    if not isinstance(options, Mapping):
        raise ImproperlyConfigured(
            f"SHOAL_OPTIONS={options!r}: give a dict of shoal.SessionManager keyword "
            'arguments, e.g. {"policy": "serialized"}'
        )
    age = getattr(settings, "SESSION_COOKIE_AGE", None)
    cookie = tuple(getattr(settings, name, None) for name in _COOKIE_SETTINGS)
    cache_key = (store if isinstance(store, (str, type(None))) else id(store),
                 repr(sorted(options.items())), age, cookie)  # fmt: skip
    with _managers_lock:
        found = _managers.get(cache_key)
        if found is None:
            _check_cookie_prefix()
            found = _managers[cache_key] = _build(store, options)
        return found


_COOKIE_SETTINGS: Final = (
    "SESSION_COOKIE_NAME", "SESSION_COOKIE_SECURE", "SESSION_COOKIE_DOMAIN", "SESSION_COOKIE_PATH",
)


def _check_cookie_prefix() -> None:
    """The ``__Host-``/``__Secure-`` rules (``CookieOptions``'s) on Django's cookie settings.

    Django's ``SessionMiddleware`` sets the cookie, so shoal cannot force
    Secure as its own transports do; a prefixed cookie that breaks the rules
    is silently dropped by every browser (no session would stick), so it is
    refused here, naming the setting to change.
    """
    name = str(settings.SESSION_COOKIE_NAME)
    prefix = name_prefix(name)
    if prefix is None:
        return
    start = f"SESSION_COOKIE_NAME={name!r}: browsers keep a {prefix} cookie only"
    if not settings.SESSION_COOKIE_SECURE:
        raise ImproperlyConfigured(
            f"{start} when it is Secure; set SESSION_COOKIE_SECURE = True (the site then "
            "needs HTTPS), or choose a name without the prefix for plain HTTP"
        )
    if prefix != "__Host-":
        return
    if settings.SESSION_COOKIE_DOMAIN is not None:
        raise ImproperlyConfigured(
            f"{start} without a Domain; set SESSION_COOKIE_DOMAIN = None (the cookie then "
            "goes to this host only), or use the __Secure- prefix to share it between subdomains"
        )
    if settings.SESSION_COOKIE_PATH != "/":
        raise ImproperlyConfigured(
            f"{start} with the Path /; set SESSION_COOKIE_PATH = '/', or use the __Secure- "
            "prefix for a cookie of one path"
        )


def _build(store: object, options: Mapping[str, Any]) -> SessionManager:
    valid = [
        name for name in inspect.signature(SessionManager).parameters if name != "store"
    ]
    for name in options:
        if name in _DJANGO_OWNS:
            raise ImproperlyConfigured(f"SHOAL_OPTIONS[{name!r}]: use {_DJANGO_OWNS[name]}")
        if name not in valid:
            raise ImproperlyConfigured(
                f"SHOAL_OPTIONS has an unknown option {name!r}; valid: "
                f"{', '.join(n for n in valid if n not in _DJANGO_OWNS)}"
            )
    if store is not None and not isinstance(store, str):
        raise ImproperlyConfigured(
            f"SHOAL_STORE={store!r}: give a store URL such as 'sqlite:///var/lib/app/"
            "sessions.db' or 'redis://127.0.0.1:6379/0', or None for $SHOAL_STORE or "
            "the embedded default"
        )
    try:
        return SessionManager(store, **{**_defaults(), **options})
    except ConfigError as exc:
        raise ImproperlyConfigured(f"shoal's Django settings (SHOAL_STORE, SHOAL_OPTIONS): {exc}") from exc


def close_managers() -> None:
    """Close every manager ``get_manager`` built (their store connections); for tests."""
    with _managers_lock:
        managers = list(_managers.values())
        _managers.clear()
    for manager in managers:
        manager.close()


# The shoal sessions this request (thread or asyncio task) opened, rolled
# back when it ends: a view that only read a serialized session leaves Django
# no reason to call save(), and its lease must not outlive the request.
# Rejected: a SessionMiddleware of shoal's own (a third setting to change).
_opened: ContextVar[list[tuple[SessionManager, Session]] | None] = ContextVar(
    "shoal_django_opened", default=None
)


def _track(manager: SessionManager, session: Session) -> None:
    opened = _opened.get()
    if opened is None:
        opened = []
        _opened.set(opened)
    opened.append((manager, session))


def _end_of_request(**_: object) -> None:
    """``request_finished``: roll back what the request left open (releases leases)."""
    opened = _opened.get()
    if not opened:
        return
    pending, opened[:] = list(opened), []
    for manager, session in pending:
        try:
            manager.rollback(session)
        except Exception:  # noqa: BLE001 - the response is gone; the lease then expires
            log.warning("could not release a session at the end of a request", exc_info=True)


request_finished.connect(_end_of_request, dispatch_uid="shoal.django.end_of_request")


class SessionStore(SessionBase):  # type: ignore[misc]  # Django has no type hints
    """Django's session API over one ``shoal.Session`` at a time (see the module docs).

    ``self._shoal`` is the open shoal session: opened (and loaded) at the
    first access, committed by ``save()``, ``cycle_key()`` and ``flush()``;
    the next access opens the session again under its current key.
    """

    # SessionBase's properties, typed for mypy (Django has no hints).
    _session_key: str | None
    session_key: str | None
    accessed: bool
    modified: bool

    def __init__(self, session_key: str | None = None) -> None:
        super().__init__(session_key)
        self._manager = get_manager()
        self._shoal: Session | None = None
        # Set after a save or cycle_key: the key names a stored session, so
        # finding nothing when it is opened again means another request
        # deleted it, and the next save raises UpdateError (never re-creates).
        self._stored = False
        self._lost = False

    def __repr__(self) -> str:
        return f"<shoal.django.SessionStore {self._shoal!r}>"

    # -- the open shoal session -------------------------------------------

    def _open(self, *, no_load: bool = False) -> Session:
        """The open shoal session, opened and loaded now if there is none."""
        current = self._shoal
        if current is not None and not current._closed:
            return current
        key = None if no_load else self._session_key
        session = self._manager.begin(key, lazy=False)
        _track(self._manager, session)
        self._shoal = session
        if key is not None and not session.is_new:
            self._stored = True
        elif key is not None:
            if self._stored:
                self._lost = True  # deleted by another request since our save
            else:
                self._session_key = None  # unknown: never adopted, a new key at save
        return session

    def _drop(self) -> None:
        """Roll back the open session (releases its lease); the next access reopens."""
        current, self._shoal = self._shoal, None
        if current is not None:
            self._manager.rollback(current)

    def _get_session(self, no_load: bool = False) -> Session:
        self.accessed = True
        return self._open(no_load=no_load)

    async def _aget_session(self, no_load: bool = False) -> Session:
        self.accessed = True
        current = self._shoal
        if current is not None and not current._closed:
            return current
        return await sync_to_async(self._open)(no_load=no_load)

    _session = property(_get_session)

    @property
    def _session_cache(self) -> Session:
        """The loaded session; ``AttributeError`` before the first access, as in Django."""
        current = self._shoal
        if current is None or current._closed:
            raise AttributeError("_session_cache")
        return current

    @_session_cache.deleter
    def _session_cache(self) -> None:
        self._drop()

    @property
    def shoal(self) -> Session:
        """The ``shoal.Session`` itself: ``lock()``, ``set(key, value, ttl=)``, tokens, flashes."""
        return self._get_session()

    def _get_new_session_key(self) -> str:
        return new_id()

    # -- SessionBase: data ------------------------------------------------

    def clear(self) -> None:
        """Empty the session, its custom expiry included; the key stays (as Django)."""
        session = self._get_session()
        for key in list(session):
            del session[key]
        session.set_lifetime()
        self.modified = True

    def is_empty(self) -> bool:
        if self._session_key:
            return False
        current = self._shoal
        return current is None or not current.loaded or len(current) == 0

    def set_expiry(self, value: Any) -> None:
        """Django's ``set_expiry``, also setting the session's core lifetime."""
        super().set_expiry(value)
        self._set_lifetime(value)

    async def aset_expiry(self, value: Any) -> None:
        await super().aset_expiry(value)
        self._set_lifetime(value)  # the session is loaded: no I/O

    def _set_lifetime(self, value: Any) -> None:
        session = self._get_session()
        if isinstance(value, timedelta):
            value = datetime.fromisoformat(self[_EXPIRY_KEY])
        if isinstance(value, datetime):
            session.set_lifetime(until=value.timestamp())
        elif value:  # seconds; 0 (browser close) and None take the default
            session.set_lifetime(value)
        else:
            session.set_lifetime()

    # -- SessionBase: storage ----------------------------------------------

    def load(self) -> dict[str, Any]:
        """Load the session now; ``{}`` (and no key) when the store has none."""
        self._drop()
        self._stored = self._lost = False
        return dict(self._open())

    def exists(self, session_key: str | None) -> bool:
        if not is_well_formed(session_key):
            return False
        probe = self._manager.begin(session_key, read_only=True, lazy=False)
        try:
            return not probe.is_new
        finally:
            self._manager.rollback(probe)

    def create(self) -> None:
        """Store a new, empty session under a new key now."""
        self._drop()
        self._stored = self._lost = False
        session = self._open(no_load=True)
        session.refresh()
        self._commit(session)
        self.modified = True

    def save(self, must_create: bool = False) -> None:
        """Commit what the request changed; ``UpdateError`` if the session was deleted.

        ``must_create``: a stored session is a ``CreateError``. A new session
        is stored even when empty, and a stored one has its expiry slid from
        now even when unchanged (``SESSION_SAVE_EVERY_REQUEST``).
        """
        session = self._open(no_load=must_create)
        if self._lost:
            self._drop()
            raise UpdateError("the session was deleted by another request since it was saved")
        if must_create and not session.is_new:
            raise CreateError
        session.refresh()
        self._commit(session)

    def _commit(self, session: Session) -> None:
        stored = not session.is_new
        try:
            outcome = self._manager.commit(session)
        except (ConflictError, LockLost) as exc:
            raise ShoalUpdateError(str(exc)) from exc
        if stored and outcome.clear:  # gone: invalidated or expired meanwhile
            raise UpdateError("the session was deleted by another request")
        self._session_key = session.id
        self._stored = True

    def delete(self, session_key: str | None = None) -> None:
        """End the session under ``session_key`` (default: this one's) in the store now."""
        if session_key is None or session_key == self.session_key:
            session_key = self.session_key
            if session_key is None:
                return
            self._drop()
        if is_well_formed(session_key):
            manager = self._manager
            manager.store.invalidate(
                RecordKey(manager.app_id, hash_id(session_key)), now=manager.clock()
            )

    def cycle_key(self) -> None:
        """A new key for the same data, now: the old key is dead when this returns."""
        session = self._get_session()
        session.rotate(grace=0)  # Django: the old key is dead at once
        self._commit(session)

    async def acycle_key(self) -> None:
        await sync_to_async(self.cycle_key)()

    def flush(self) -> None:
        """End the session now (its key is dead) and start an empty one without a key."""
        session = self._get_session()
        if not session.is_new:
            session.invalidate()
            self._manager.commit(session)
        else:
            self._drop()
        self._session_key = None
        self._stored = self._lost = False
        self._open(no_load=True)
        self.modified = True

    async def aflush(self) -> None:
        await sync_to_async(self.flush)()

    @classmethod
    def clear_expired(cls) -> None:
        """Delete records expired longer than the grace period (``manage.py clearsessions``)."""
        manager = get_manager()
        for _ in range(100_000):  # bounded: at most 100 million records per call
            if manager.purge(limit=1000) < 1000:
                return


class SessionErrorMiddleware:
    """Store errors raised in a view become 503/409 answers (``shoal.transports``).

    ``LockTimeout`` and ``StoreUnavailable`` answer 503 with Retry-After,
    ``ConflictError`` and ``LockLost`` 409, instead of Django's 500 page.
    Put it in ``MIDDLEWARE`` after ``SessionMiddleware``.
    """

    sync_capable = True
    async_capable = False

    def __init__(self, get_response: Callable[[HttpRequest], HttpResponse]) -> None:
        self.get_response = get_response

    def __call__(self, request: HttpRequest) -> HttpResponse:
        return self.get_response(request)

    def process_exception(self, request: HttpRequest, exception: Exception) -> HttpResponse | None:
        if not isinstance(exception, ANSWERED):
            return None
        store = getattr(request, "session", None)
        if isinstance(store, SessionStore):
            store._drop()  # release the lease now; nothing of this request is saved
            store.modified = False
        status, headers, body = error_response(exception)
        response = HttpResponse(body, status=int(status.split()[0]))
        for name, value in headers:
            response[name] = value
        return response
