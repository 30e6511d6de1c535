"""ASGI middleware: the session at ``scope["session"]`` and ``scope["shoal.session"]``.

Built on the manager's async path (``abegin``/``acommit``/``arollback``):
the same request steps as the WSGI middleware, awaited on the store's async
twin (``shoal.stores.async_twin``): native ``redis.asyncio`` for Redis,
each call in a store thread for the stores whose calls block in C (SQLite,
dbm, file, memory) or that have no async driver. No store I/O ever runs on
the event loop.

When the load happens: a request without a session id (cookie or header)
costs no store I/O at all (its session is new and empty, made on first use
without a lookup). A request with one is loaded, and locked under ``serialized``, in a
thread *before* the application is called, because a lazy load would be a
blocking ``__getitem__`` on the loop. Rejected: loading on first access (it
blocks the loop) and an ``await session.load()`` the application must call
(Starlette's ``request.session`` is a plain mapping, read synchronously).

The commit runs when the application sends ``http.response.start``, before
it goes out, so Set-Cookie and ``Vary`` can be added (``shoal.transports``);
an exception from the application before that rolls back and releases the
lease at once. ``StoreUnavailable``/``LockTimeout`` become a 503 with
Retry-After, ``ConflictError``/``LockLost`` a 409: a short plain-text body
(``error_response``), never a traceback. The session stays readable to the
end of the request; a write after the commit raises ``SessionStateError``.

``scope["session"]`` is a ``SessionDict``: a real ``dict`` (``json.dumps``,
``|=``, ``dict(...)``, ``==`` work) whose every read and write goes to the
shoal session, so per-key tracking, merge and conflict detection hold.
WebSocket and lifespan scopes pass through untouched.
"""

from __future__ import annotations

import copy
import logging
from functools import partial
from collections.abc import (
    Awaitable,
    Callable,
    ItemsView,
    Iterable,
    Iterator,
    KeysView,
    Mapping,
    MutableMapping,
    ValuesView,
)
from typing import Any

from ._middleware import MiddlewareOptions
from .errors import ConflictError, LockLost, LockTimeout, ShoalError, StoreUnavailable
from .manager import CommitOutcome, SessionManager
from .session import Session
from .transports import ANSWERED, Incoming, Transport
from .wsgi import _log_misuse, error_response, report_error, report_rollback_failure

__all__ = ["SCOPE_KEY", "SessionDict", "SessionMiddleware", "answer_error", "rollback_quietly"]

log = logging.getLogger("shoal")

SCOPE_KEY = "shoal.session"

Scope = MutableMapping[str, Any]
Message = MutableMapping[str, Any]
Receive = Callable[[], Awaitable[Message]]
Send = Callable[[Message], Awaitable[None]]
ASGIApp = Callable[[Scope, Receive, Send], Awaitable[None]]

_MISSING: Any = object()


async def answer_error(
    manager: SessionManager,
    session: Session,
    exc: StoreUnavailable | LockTimeout | ConflictError | LockLost,
) -> tuple[str, list[tuple[str, str]], bytes]:
    """``shoal.wsgi.answer_error`` for async code: the rollback awaited."""
    report_error(exc)
    try:
        await manager.arollback(session)
    except ShoalError as cleanup:
        report_rollback_failure(cleanup, exc)
    return error_response(exc)


async def rollback_quietly(manager: SessionManager, session: Session) -> None:
    """``shoal.wsgi.rollback_quietly`` for async code: a failure is logged, never raised."""
    try:
        await manager.arollback(session)
    except ShoalError as cleanup:
        log.warning("session rollback failed too: %s", cleanup)


class SessionDict(dict[str, Any]):
    """``scope["session"]``: a ``dict`` over the request's ``shoal.Session``.

    Starlette code treats ``request.session`` as a real dict: ``json.dumps``
    (which insists on a ``dict``), ``request.session |= {...}``,
    ``dict(request.session)``. Every read and write goes to the shoal
    session (``.session``), which tracks keys read and written; the dict's
    own memory is a mirror of the session's values, kept for code that reads
    a dict's memory directly (json's shortcut for ``{}``, orjson). The view's
    writes keep it in step, and every whole-dict read (iteration, ``len``,
    ``items()``, ``==``) refreshes it; a write made through
    ``scope["shoal.session"]`` reaches the mirror at the view's next use.
    Rejected: making the shoal ``Session`` itself a dict subclass (dict
    methods written in C would bypass its tracking) and a plain dict diffed
    at commit (no per-key reads for the optimistic policy, no ``ttl``).

    A copy (``copy()``, ``copy.copy``, ``|``) is a plain dict snapshot.
    """

    __slots__ = ("session",)

    def __init__(self, session: Session) -> None:
        super().__init__()
        self.session = session
        if session.loaded:
            self._refresh()

    def _refresh(self) -> None:
        """Copy the session's values into the dict's memory, without marking reads."""
        dict.clear(self)
        dict.update(self, self.session._listed())

    # -- reads: through the session ---------------------------------------

    def __getitem__(self, key: str) -> Any:
        return self.session[key]

    def get(self, key: str, default: Any = None) -> Any:
        return self.session.get(key, default)

    def __contains__(self, key: object) -> bool:
        return key in self.session

    def __iter__(self) -> Iterator[str]:
        self._refresh()
        return iter(list(dict.keys(self)))

    def __reversed__(self) -> Iterator[str]:
        return reversed(list(self))

    def __len__(self) -> int:
        self._refresh()
        return dict.__len__(self)

    def keys(self) -> KeysView[str]:  # type: ignore[override]
        return KeysView(self)

    def values(self) -> ValuesView[Any]:  # type: ignore[override]
        return ValuesView(self)

    def items(self) -> ItemsView[str, Any]:  # type: ignore[override]
        return ItemsView(self)

    def __eq__(self, other: object) -> bool:
        if not isinstance(other, Mapping):
            return NotImplemented
        return dict(self.items()) == dict(other.items())

    def __ne__(self, other: object) -> bool:
        equal = self.__eq__(other)
        return equal if equal is NotImplemented else not equal

    __hash__ = None

    def __repr__(self) -> str:
        return f"SessionDict({dict(self.items())!r})"

    def copy(self) -> dict[str, Any]:
        return dict(self.items())

    def __copy__(self) -> dict[str, Any]:
        return self.copy()

    def __deepcopy__(self, memo: dict[int, Any]) -> dict[str, Any]:
        return copy.deepcopy(self.copy(), memo)

    def __reduce__(self) -> tuple[Any, ...]:
        return (dict, (self.copy(),))

    def __or__(self, other: object) -> dict[str, Any]:  # type: ignore[override]
        if not isinstance(other, Mapping):
            return NotImplemented
        return {**self.copy(), **other}

    def __ror__(self, other: object) -> dict[str, Any]:  # type: ignore[override]
        if not isinstance(other, Mapping):
            return NotImplemented
        return {**other, **self.copy()}

    # -- writes: through the session, then the mirror -----------------------

    def __setitem__(self, key: str, value: Any) -> None:
        self.session[key] = value  # checks, encodes, raises before the mirror changes
        dict.__setitem__(self, key, value)

    def __delitem__(self, key: str) -> None:
        del self.session[key]
        dict.pop(self, key, None)

    def update(self, other: Any = (), /, **kwargs: Any) -> None:
        if isinstance(other, Mapping):
            pairs: Iterable[tuple[str, Any]] = other.items()
        elif hasattr(other, "keys"):
            pairs = ((key, other[key]) for key in other.keys())
        else:
            pairs = other
        for key, value in pairs:
            self[key] = value
        for key, value in kwargs.items():
            self[key] = value

    def __ior__(self, other: Any) -> SessionDict:  # type: ignore[override,misc]
        self.update(other)
        return self

    def setdefault(self, key: str, default: Any = None) -> Any:
        try:
            return self[key]
        except KeyError:
            self[key] = default
            return default

    def pop(self, key: str, default: Any = _MISSING) -> Any:
        try:
            value = self[key]
        except KeyError:
            if default is _MISSING:
                raise
            return default
        del self[key]
        return value

    def popitem(self) -> tuple[str, Any]:
        for key in reversed(list(self)):
            value = self[key]
            del self[key]
            return key, value
        raise KeyError("popitem(): session is empty")

    def clear(self) -> None:
        for key in list(self):
            del self[key]


class SessionMiddleware(MiddlewareOptions[ASGIApp]):
    """Wrap an ASGI application with shoal sessions from ``manager``.

    ``SessionMiddleware(app, manager, *, retry_conflicts=0,
    max_replay_body=65536, transport=None)``: the options are
    ``shoal._middleware.MiddlewareOptions``' (the same for WSGI and ASGI).
    """

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)  # websocket, lifespan: untouched
            return
        replay = await _capture(scope, receive, self.max_replay_body) if self.retry_conflicts else None
        if replay is None:
            await self._run(scope, receive, send, retry=False)
            return
        for attempt in range(self.retry_conflicts + 1):
            last = attempt == self.retry_conflicts
            # A re-run gets the scope as it was before the first run.
            current = scope if attempt == 0 else dict(replay.scope)
            if await self._run(current, replay.receive(receive), send, retry=not last):
                if attempt:
                    scope["session"], scope[SCOPE_KEY] = current["session"], current[SCOPE_KEY]
                return
            log.info(
                "node %s: session conflict; running the request again (retry %d)",
                self.manager.node_id, attempt + 1,
            )  # fmt: skip

    async def _run(self, scope: Scope, receive: Receive, send: Send, *, retry: bool) -> bool:
        """One run of the application; False when it must run again (``retry``)."""
        incoming = self.transport.read(partial(_scope_header, scope))
        session = self.manager._async_session(incoming.session_id, replica=incoming.replica)
        session._set_end(
            "when the response started (http.response.start)",
            "set session values before sending the response",
        )
        exchange = _Exchange(
            self.manager, self.transport, session, incoming, send,
            https=scope.get("scheme") == "https", defer_conflict=retry,
        )  # fmt: skip
        # Loaded (and locked) now, awaited: a lazy load would block the loop.
        # Without an id: new and empty, made on first use with no store I/O.
        try:
            await self.manager._aload(session)
        except ANSWERED as exc:
            await exchange.abort(exc)
            return True
        scope["session"] = SessionDict(session)
        scope[SCOPE_KEY] = session
        try:
            await self.app(scope, receive, exchange.send)
        except ANSWERED as exc:
            if exchange.started:
                await exchange.rollback_quietly()
                raise
            await exchange.abort(exc)
            return True
        except ShoalError as exc:
            await exchange.rollback_quietly()
            if not exchange.misuse_logged:
                _log_misuse(exc)
            raise
        except BaseException:
            await exchange.rollback_quietly()
            raise
        if not exchange.started:
            # No response at all (the server answers 500): nothing to save.
            await exchange.rollback_quietly()
        return not exchange.conflict


class _Exchange:
    """One request's session commit, done when ``http.response.start`` is sent."""

    def __init__(
        self,
        manager: SessionManager,
        transport: Transport,
        session: Session,
        incoming: Incoming,
        send: Send,
        *,
        https: bool,
        defer_conflict: bool,
    ) -> None:
        self.manager = manager
        self.transport = transport
        self.session = session
        self.incoming = incoming
        self._send = send
        self.https = https
        self.defer_conflict = defer_conflict  # a conflict re-runs the request: send nothing
        self.started = False  # the application sent http.response.start
        self.done = False  # committed, or answered with an error (rolled back)
        self.dropping = False  # the application's messages are not sent (error or conflict)
        self.conflict = False
        self.misuse_logged = False

    async def send(self, message: Message) -> None:
        if message["type"] == "http.response.start" and not self.started:
            self.started = True
            await self._start(message)
            return
        if self.dropping and message["type"].startswith("http.response."):
            return
        await self._send(message)

    async def _start(self, message: Message) -> None:
        try:
            outcome = await self._commit()
        except ANSWERED as exc:
            if self.defer_conflict and isinstance(exc, ConflictError):
                self.conflict = self.dropping = True
                return
            await self.abort(exc)
            return
        except ShoalError as exc:
            # A bug (an in-place edit that cannot be encoded): release the
            # lease the failed save may still hold, and raise it into the
            # application's send, as the WSGI middleware does.
            await self.rollback_quietly()
            _log_misuse(exc)
            self.misuse_logged = True
            raise
        ours = self.transport.response_headers(
            outcome, self.incoming, https=self.https, vary=self.session.loaded
        )
        headers = [*message.get("headers", ()), *_encode(ours)]
        await self._send({**message, "headers": headers})

    async def _commit(self) -> CommitOutcome:
        # A session never used commits with no store call at all.
        loaded = self.session.loaded
        outcome = await self.manager.acommit(self.session)
        self.done = loaded
        return outcome

    async def rollback_quietly(self) -> None:
        """Roll back on the way out of an error, even after a failed commit (which
        may still hold a lease); a failure is logged, never masks the error."""
        if self.done:
            return
        self.done = True
        await rollback_quietly(self.manager, self.session)

    async def abort(self, exc: StoreUnavailable | LockTimeout | ConflictError | LockLost) -> None:
        """Answer with the error's status instead of the application's response."""
        self.done = self.dropping = True
        status, headers, body = await answer_error(self.manager, self.session, exc)
        await self._send({
            "type": "http.response.start",
            "status": int(status.split(" ", 1)[0]),
            "headers": _encode(headers),
        })
        await self._send({"type": "http.response.body", "body": body})


def _encode(headers: Iterable[tuple[str, str]]) -> list[tuple[bytes, bytes]]:
    return [(name.lower().encode("latin-1"), value.encode("latin-1")) for name, value in headers]


def _scope_header(scope: Scope, name: str) -> str | None:
    """A request header by name, or None. Several are joined as HTTP joins them:
    Cookie headers (HTTP/2 splits them) with "; ", any other with ", "."""
    wanted = name.lower().encode("latin-1")
    found = [value.decode("latin-1") for key, value in scope.get("headers", ()) if key == wanted]
    if not found:
        return None
    return ("; " if wanted == b"cookie" else ", ").join(found)


# -- replaying a request (retry_conflicts) ------------------------------------


class _Replay:
    """A request that can run again: its scope before the first run, its body messages."""

    def __init__(self, scope: Scope, messages: list[Message]) -> None:
        self.scope = dict(scope)
        self.messages = messages

    def receive(self, upstream: Receive) -> Receive:
        """A ``receive`` that gives the body again, then waits on the server's
        (for ``http.disconnect``)."""
        pending = [dict(message) for message in self.messages]

        async def replayed() -> Message:
            if pending:
                return pending.pop(0)
            return await upstream()

        return replayed


async def _capture(scope: Scope, receive: Receive, limit: int) -> _Replay | None:
    """Read the body when it can be replayed (declared length <= ``limit``, or none).

    Returns None, reading nothing, when it cannot: a larger body, an invalid
    length, a chunked body or an HTTP/2+ body of unknown length. As for WSGI
    (``shoal._replay``), a request with neither a length nor a
    Transfer-Encoding over HTTP/1.x has no body.
    """
    length_text = coding = None
    for name, value in scope.get("headers", ()):
        if name == b"content-length":
            length_text = value.decode("latin-1").strip()
        elif name == b"transfer-encoding":
            coding = value.decode("latin-1").strip().lower()
    if length_text is None:
        if coding and coding != "identity":
            return None
        if scope.get("http_version", "1.1") not in ("1.0", "1.1") and scope.get(
            "method", "GET"
        ) not in ("GET", "HEAD"):
            return None  # HTTP/2 sends bodies without a length
        length = 0
    else:
        if not (length_text.isascii() and length_text.isdigit()):  # "³".isdigit() is True
            return None
        length = int(length_text)
        if length > limit:
            return None
    # Every HTTP request brings at least one http.request message, an empty
    # body included: it is read too, or a re-run would wait for it forever.
    messages: list[Message] = []
    while True:
        message = await receive()
        messages.append(message)
        if message["type"] != "http.request" or not message.get("more_body", False):
            break
    return _Replay(scope, messages)
