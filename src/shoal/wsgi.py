"""WSGI middleware: the session at ``environ["shoal.session"]``, lazily loaded.

A request that never touches the session costs no store I/O. The session is
committed when the application calls ``start_response`` (before any byte of
the body is sent), so Set-Cookie can still be added; an exception from the
application rolls it back. The session stays readable after that, to the end
of the request (the body iterable included): reads see what was committed,
and a session first read then is loaded read-only. A store that cannot be
reached, or a lock that cannot be had, becomes a short 503 for the client and
a log line for the operator, never a traceback; a save that lost a race
becomes a 409. Any other shoal error (a write after the commit, a write to a
read-only session, a value that cannot be encoded) is a bug in the
application: it propagates like any exception from the view, and the server
answers 500.
"""

from __future__ import annotations

import logging
import sys
from collections.abc import Callable, Iterable, Iterator
from functools import partial
from typing import TYPE_CHECKING

from ._middleware import MiddlewareOptions
from ._replay import UnreadableBody, capture
from .errors import (
    ConflictError,
    LockLost,
    LockTimeout,
    ShoalError,
    StoreUnavailable,
)
from .manager import CommitOutcome, SessionManager
from .session import Session
from .transports import ANSWERED, Incoming, Transport, error_response

__all__ = [
    "ENVIRON_KEY", "SessionMiddleware", "answer_error", "error_response", "report_error",
    "report_rollback_failure", "rollback_quietly",
]

log = logging.getLogger("shoal")

ENVIRON_KEY = "shoal.session"

if TYPE_CHECKING:
    from _typeshed import OptExcInfo
    from _typeshed.wsgi import StartResponse, WSGIApplication, WSGIEnvironment

Headers = list[tuple[str, str]]


def answer_error(
    manager: SessionManager,
    session: Session,
    exc: StoreUnavailable | LockTimeout | ConflictError | LockLost,
) -> tuple[str, Headers, bytes]:
    """Roll ``session`` back and log ``exc``; the response that replaces the application's.

    Logged in one line, never with a traceback (the message carries the
    driver's error). A ``StoreUnavailable`` that is ``reported`` belongs to an
    outage the store's circuit breaker has logged (opened, a summary every
    30 s, closed): it goes to DEBUG, so an outage writes a handful of
    records, not one per request. Rejected: a WARNING with the chained
    traceback per request, which buried an outage of seconds under a
    thousand traceback lines. Shared by the WSGI middleware and the
    framework adapters.
    """
    report_error(exc)
    try:
        manager.rollback(session)
    except ShoalError as cleanup:
        report_rollback_failure(cleanup, exc)
    return error_response(exc)


def report_error(exc: StoreUnavailable | LockTimeout | ConflictError | LockLost) -> None:
    """Log a session error answered with an error response, in one line."""
    if isinstance(exc, StoreUnavailable):
        level = logging.DEBUG if exc.reported else logging.WARNING
    else:
        level = logging.INFO
    log.log(level, "session error, answering with an error: %s", exc)


def report_rollback_failure(cleanup: ShoalError, exc: BaseException) -> None:
    """Log a rollback that failed on the way out of ``exc``; it never masks ``exc``.

    Releasing the lease of a store that just failed fails too: the same
    outage, already said, goes to DEBUG.
    """
    said = isinstance(cleanup, StoreUnavailable) and (
        cleanup.reported or isinstance(exc, StoreUnavailable)
    )
    level = logging.DEBUG if said else logging.WARNING
    log.log(level, "session rollback failed too: %s", cleanup)


def rollback_quietly(manager: SessionManager, session: Session) -> None:
    """Roll back on the way out of an error, even after a failed commit (which
    may still hold a lease); a failure is logged, never masks the error."""
    try:
        manager.rollback(session)
    except ShoalError as cleanup:
        log.warning("session rollback failed too: %s", cleanup)


def _log_misuse(exc: ShoalError) -> None:
    """One line on the shoal logger; the traceback is the server's to log."""
    log.error(
        "session misuse in the application (%s: %s); not a store error: "
        "it propagates to the server (500)", type(exc).__name__, exc,
    )


class SessionMiddleware(MiddlewareOptions["WSGIApplication"]):
    """Wrap a WSGI application with shoal sessions from ``manager``.

    ``SessionMiddleware(app, manager, *, retry_conflicts=0,
    max_replay_body=65536, transport=None)``: the options are
    ``shoal._middleware.MiddlewareOptions``' (the same for WSGI and ASGI).
    """

    def __call__(
        self, environ: WSGIEnvironment, start_response: StartResponse
    ) -> Iterable[bytes]:
        if not self.retry_conflicts:
            return self._run(environ, start_response, retry=False) or []
        try:
            replay = capture(environ, self.max_replay_body)
        except UnreadableBody as exc:
            log.info("request body could not be read: %s", exc)
            return _plain(start_response, "400 Bad Request", b"Request body incomplete.\n")
        if replay is None:
            return self._run(environ, start_response, retry=False) or []
        for attempt in range(self.retry_conflicts + 1):
            last = attempt == self.retry_conflicts
            current = replay.attempt(environ if attempt == 0 else None)
            result = self._run(current, start_response, retry=not last)
            if result is not None:
                if attempt:
                    environ[ENVIRON_KEY] = current[ENVIRON_KEY]
                return result
            log.info(
                "node %s: session conflict; running the request again (retry %d)",
                self.manager.node_id, attempt + 1,
            )  # fmt: skip
        raise AssertionError("unreachable: the last attempt never defers a conflict")

    def _run(
        self, environ: WSGIEnvironment, start_response: StartResponse, *, retry: bool
    ) -> Iterable[bytes] | None:
        """One run of the application; None when it must run again (``retry``)."""
        incoming = self.transport.read(partial(_environ_header, environ))
        session = self.manager.begin(incoming.session_id, replica=incoming.replica)
        session._set_end("when the response started", "set session values before start_response")
        environ[ENVIRON_KEY] = session
        https = environ.get("wsgi.url_scheme") == "https"
        state = _Exchange(
            self.manager, self.transport, session, incoming, start_response, https,
            defer_conflict=retry,
        )  # fmt: skip
        try:
            body = self.app(environ, state.start_response)
            chunks = iter(body)
            # An app may call start_response only when its body is iterated.
            first = next(chunks, None) if not state.started else None
        except ANSWERED as exc:
            state.abort(exc)
            return [state.error_body]
        except ShoalError as exc:
            state.rollback_quietly()
            if not state.misuse_logged:
                _log_misuse(exc)
            raise
        except BaseException:
            state.rollback()
            raise
        if state.conflict:
            _close(body)
            return None
        if state.error_body:
            _close(body)
            return [state.error_body]
        return _Body(body, chunks, first)


class _Exchange:
    """One request's session commit, done at ``start_response``."""

    def __init__(
        self,
        manager: SessionManager,
        transport: Transport,
        session: Session,
        incoming: Incoming,
        start: StartResponse,
        https: bool,
        *,
        defer_conflict: bool = False,
    ) -> None:
        self.manager = manager
        self.transport = transport
        self.session = session
        self.incoming = incoming
        self.start = start
        self.https = https
        self.defer_conflict = defer_conflict  # a conflict re-runs the request: send nothing
        self.started = False  # the application called start_response
        self.sent = False  # we called the server's start_response
        self.closed = False
        self.conflict = False  # the commit conflicted and the run is abandoned
        self.error_body = b""
        self.misuse_logged = False  # a misuse at commit was logged on its way out

    def start_response(
        self, status: str, headers: Headers, exc_info: OptExcInfo | None = None, /
    ) -> Callable[[bytes], object]:
        self.started = True
        if self.conflict:
            return lambda data: None  # an abandoned run sends nothing at all
        if exc_info is not None:
            self.rollback()
            self.sent = True
            return self.start(status, headers, exc_info)
        try:
            outcome = self._commit()
        except ANSWERED as exc:
            if self.defer_conflict and isinstance(exc, ConflictError):
                # The server's start_response was not called: the middleware
                # can run the request again and send only that response.
                self.conflict = True
            else:
                self.abort(exc)
            # The write callable of an aborted response discards its data.
            return lambda data: None
        except ShoalError as exc:
            # A bug (e.g. an in-place edit that cannot be encoded): release the
            # lease the failed save still holds, and raise it into the
            # application's start_response call, as a server would.
            self.rollback_quietly()
            _log_misuse(exc)
            self.misuse_logged = True
            raise
        self.sent = True
        # The response depends on a loaded session: shared caches must not reuse it.
        ours = self.transport.response_headers(
            outcome, self.incoming, https=self.https, vary=self.session.loaded
        )
        return self.start(status, [*headers, *ours])

    def _commit(self) -> CommitOutcome:
        if self.closed:
            return CommitOutcome()
        self.closed = True
        return self.manager.commit(self.session)

    def rollback(self) -> None:
        if not self.closed:
            self.closed = True
            self.manager.rollback(self.session)

    def rollback_quietly(self) -> None:
        self.closed = True
        rollback_quietly(self.manager, self.session)

    def abort(self, exc: StoreUnavailable | LockTimeout | ConflictError | LockLost) -> None:
        """Answer with the error's status instead of the application's response."""
        self.closed = True
        status, headers, body = answer_error(self.manager, self.session, exc)
        self.error_body = body
        # Replacing a response already handed to the server needs exc_info.
        exc_info = sys.exc_info() if self.sent else None
        self.sent = True
        self.start(status, headers, exc_info)


class _Body:
    """The application's body, with the first chunk already pulled; closes it."""

    def __init__(self, body: Iterable[bytes], chunks: Iterator[bytes], first: bytes | None):
        self._body = body
        self._chunks = chunks
        self._first = first

    def __iter__(self) -> Iterator[bytes]:
        if self._first is not None:
            yield self._first
        yield from self._chunks

    def close(self) -> None:
        _close(self._body)


def _environ_header(environ: WSGIEnvironment, name: str) -> str | None:
    """A request header from ``environ`` by its name (``"Cookie"`` is ``HTTP_COOKIE``)."""
    value = environ.get("HTTP_" + name.upper().replace("-", "_"))
    return value if isinstance(value, str) else None


def _plain(start_response: StartResponse, status: str, body: bytes) -> list[bytes]:
    headers = [("Content-Type", "text/plain; charset=utf-8"), ("Content-Length", str(len(body)))]
    start_response(status, headers)
    return [body]


def _close(body: Iterable[bytes]) -> None:
    close = getattr(body, "close", None)
    if close is not None:
        close()
