"""Flask: ``flask.session`` as a shoal session, installed by ``init_app(app, manager)``.

``init_app`` sets the application's ``session_interface`` to a
``ShoalSessionInterface``: each request gets a ``FlaskSession``, a
``SessionMixin`` mapping over a lazily loaded ``shoal.Session`` (no store
I/O for a request that never reads or writes it), committed in
``save_session``, after the ``after_request`` functions and before the body
is sent, so the cookie can still be set. It stays readable afterwards
(streamed bodies); writes after it raise ``SessionStateError``.

The id and replica travel through ``shoal.transports.CookieTransport``, as
with the WSGI middleware; this module only maps Flask's request, response
and configuration onto it:

- Cookie options come from ``app.config`` (``SESSION_COOKIE_NAME``,
  ``_DOMAIN``, ``_PATH``, ``_HTTPONLY``, ``_SECURE``, ``_SAMESITE``,
  ``_PARTITIONED``), read per request as Flask does, unless the manager was
  given cookie options of its own (any that differ from ``CookieOptions()``):
  then those are used and a ``SESSION_COOKIE_*`` setting that differs from
  Flask's default is a ``ConfigError`` at ``init_app``, rather than one of
  two silently ignored.
- ``session.permanent`` (Flask's ``_permanent`` key) makes the cookie
  persistent for ``PERMANENT_SESSION_LIFETIME`` (capped at the session's
  absolute expiry), re-sent on every request when
  ``SESSION_REFRESH_EACH_REQUEST``, and gives the session that lifetime
  in the core (``Session.set_lifetime``): the record lives as long as the
  cookie, not the manager's ``idle_timeout`` (docs/frameworks.md).
- An exception Flask treats as unhandled (``got_request_exception``), or a
  response with status 500, rolls the session back and releases its lease
  at once; the request context's teardown rolls back whatever is still
  open, so no lease outlives the request on any path.
- ``StoreUnavailable``/``LockTimeout`` become a 503 and ``ConflictError``/
  ``LockLost`` a 409 (``shoal.transports.error_response``), whether raised
  by the lazy load in a view or by the save.
"""

from __future__ import annotations

import logging
from collections.abc import Iterator
from datetime import timedelta
from functools import lru_cache
from typing import TYPE_CHECKING, Any, Final

from flask import Flask, Response, request
from flask.sessions import SessionInterface, SessionMixin
from flask.signals import got_request_exception
from werkzeug.datastructures import Headers as ResponseHeaders

from .cookies import CookieOptions, SameSite
from .errors import ConfigError, ConflictError, LockLost, LockTimeout, ShoalError, StoreUnavailable
from .manager import CommitOutcome, SessionManager
from .session import Session
from .transports import ANSWERED, CookieTransport, Incoming, Transport, error_response
from .wsgi import ENVIRON_KEY, answer_error, rollback_quietly

if TYPE_CHECKING:
    from flask.wrappers import Request

__all__ = ["FlaskSession", "ShoalSessionInterface", "current_session", "init_app"]

log = logging.getLogger("shoal")

_FLASK_KEY: Final = "shoal.flask_session"
_PERMANENT: Final = "_permanent"  # the key Flask's SessionMixin keeps ``permanent`` in
_COOKIE_SETTINGS: Final = (
    "SESSION_COOKIE_NAME", "SESSION_COOKIE_DOMAIN", "SESSION_COOKIE_PATH",
    "SESSION_COOKIE_HTTPONLY", "SESSION_COOKIE_SECURE", "SESSION_COOKIE_SAMESITE",
    "SESSION_COOKIE_PARTITIONED",
)  # fmt: skip


class FlaskSession(SessionMixin):
    """``flask.session``: Flask's ``SessionMixin`` over one request's ``shoal.Session``.

    The mapping is the shoal session's (values round-trip through shoal's
    codec; keys starting with ``_shoal.`` are reserved). ``shoal`` is the
    ``shoal.Session`` itself, for ``rotate()`` at login, ``lock()``,
    ``set(key, value, ttl=...)``, once-only tokens and flashes.

    - ``modified``: True when the request changed data, in-place edits of a
      value it read included (shoal detects them: ``modified = True`` is
      never needed to save data). Setting it True makes the response
      re-send the cookie, as in Flask.
    - ``new``: no stored session was loaded (this loads the session).
    - ``accessed``: set by Flask when ``flask.session`` is used; with a
      load, it adds ``Vary: Cookie`` to the response.
    - ``clear()`` ends the session (``shoal.Session.invalidate()``): its id
      is refused from now on, the cookie is cleared, and writes after it go
      to a fresh session under a new id (log out, then flash).
    """

    accessed = False

    def __init__(self, session: Session, incoming: Incoming) -> None:
        self.shoal = session
        self.incoming = incoming
        self._force = False
        self.done = False  # committed or rolled back

    # -- the mapping: the shoal session's ------------------------------------

    def __getitem__(self, key: str) -> Any:
        return self.shoal[key]

    def __setitem__(self, key: str, value: Any) -> None:
        self.shoal[key] = value

    def __delitem__(self, key: str) -> None:
        del self.shoal[key]

    def __iter__(self) -> Iterator[str]:
        return iter(self.shoal)

    def __len__(self) -> int:
        return len(self.shoal)

    def __contains__(self, key: object) -> bool:
        return key in self.shoal

    def __repr__(self) -> str:
        return f"<FlaskSession {self.shoal!r}>"

    def clear(self) -> None:
        """End the session (logout); later writes go to a fresh one."""
        self.shoal.invalidate()

    # -- Flask's attributes ---------------------------------------------------

    @property
    def modified(self) -> bool:
        return self._force or self.shoal.modified

    @modified.setter
    def modified(self, value: bool) -> None:
        self._force = bool(value)

    @property
    def new(self) -> bool:  # type: ignore[override]  # read-only: a fact about the store
        return self.shoal.is_new


@lru_cache(maxsize=64)
def _options(
    name: str, domain: str | None, path: str, httponly: bool, secure: bool | None,
    samesite: SameSite | None, partitioned: bool, max_age: int | None,
) -> CookieOptions:  # fmt: skip
    """The ``CookieOptions`` of one combination of settings, checked once."""
    return CookieOptions(
        name=name, domain=domain, path=path, httponly=httponly, secure=secure,
        samesite=samesite, partitioned=partitioned, max_age=max_age,
    )  # fmt: skip


class ShoalSessionInterface(SessionInterface):
    """Flask's session interface over a ``SessionManager``; see ``init_app``."""

    pickle_based = False

    def __init__(self, manager: SessionManager) -> None:
        self.manager = manager
        # The manager's own cookie options win over app.config (module docstring).
        self.fixed_cookie = manager.cookie if manager.cookie != CookieOptions() else None

    def __repr__(self) -> str:
        return f"<ShoalSessionInterface {self.manager!r}>"

    # -- cookie options -------------------------------------------------------

    def cookie_options(self, app: Flask, *, max_age: int | None = None) -> CookieOptions:
        """This request's cookie options: the manager's, or ``app.config``'s."""
        fixed = self.fixed_cookie
        if fixed is not None:
            if max_age is None or fixed.max_age == max_age:
                return fixed
            return _options(
                fixed.name, fixed.domain, fixed.path, fixed.httponly, fixed.secure,
                fixed.samesite, fixed.partitioned, max_age,
            )  # fmt: skip
        config = app.config
        samesite = config["SESSION_COOKIE_SAMESITE"]
        try:
            return _options(
                config["SESSION_COOKIE_NAME"],
                config["SESSION_COOKIE_DOMAIN"] or None,
                config["SESSION_COOKIE_PATH"] or config["APPLICATION_ROOT"] or "/",
                config["SESSION_COOKIE_HTTPONLY"],
                # Flask's False means "not forced": Secure follows the request's
                # scheme (shoal's secure=None). Rejected: never Secure, which
                # sends the id in the clear after an HTTPS login.
                True if config["SESSION_COOKIE_SECURE"] else None,
                samesite.title() if isinstance(samesite, str) else samesite,
                config["SESSION_COOKIE_PARTITIONED"],
                max_age,
            )
        except ConfigError as exc:
            raise ConfigError(f"{exc} (from the app's SESSION_COOKIE_* settings)") from None

    def _transport(self, app: Flask, *, max_age: int | None = None) -> Transport:
        """The manager's ``transport=`` if it has one, else the cookie of ``app.config``."""
        if self.manager.transport is not None:
            return self.manager.transport
        options = self.cookie_options(app, max_age=max_age)
        return CookieTransport(options, replica=bool(self.manager.replica))

    # -- Flask's hooks --------------------------------------------------------

    def open_session(self, app: Flask, request: Request) -> FlaskSession:
        """A lazy session for this request: no store I/O until it is used."""
        incoming = self._transport(app).read(request.headers.get)
        inner = self.manager.begin(incoming.session_id, replica=incoming.replica)
        inner._set_end(
            "when Flask saved the session (after the after_request functions)",
            "set session values in the view or an after_request function",
        )
        session = FlaskSession(inner, incoming)
        request.environ[ENVIRON_KEY] = inner
        request.environ[_FLASK_KEY] = session
        return session

    def save_session(self, app: Flask, session: SessionMixin, response: Response) -> None:
        """Commit, then set the cookies on ``response`` (or replace it with a 503/409)."""
        if not isinstance(session, FlaskSession) or session.done:
            return
        inner = session.shoal
        vary = session.accessed or inner.loaded
        if response.status_code == 500:
            # A failed request saves nothing (as Django): the error handler's
            # page is sent without Set-Cookie.
            self.rollback(session)
            if vary:
                response.vary.add("Cookie")
            return
        session.done = True
        try:
            if inner.loaded:
                self._drive_lifetime(app, inner)
            changed = inner.loaded and inner.modified  # detects in-place edits; may raise
            if changed and not inner.invalidated and not len(inner):
                # The last key was removed: end the session and clear the
                # cookie, as Flask does with an empty modified session.
                inner.invalidate()
            outcome = self.manager.commit(inner)
        except ANSWERED as exc:
            self._replace(response, inner, exc)
            return
        except ShoalError:
            # A bug (an in-place edit that cannot be encoded): release the
            # lease, and let Flask handle the error as any from the view.
            rollback_quietly(self.manager, inner)
            raise
        max_age, refresh = self._persistence(app, session, changed)
        if outcome.send_id is None and refresh and not outcome.clear:
            outcome = CommitOutcome(
                send_id=inner.id, replica=outcome.replica, clear_replica=outcome.clear_replica
            )
        headers = self._transport(app, max_age=max_age).response_headers(
            outcome, session.incoming, https=request.is_secure, vary=vary
        )
        for name, value in headers:
            if name == "Vary":
                response.vary.add(value)  # merged with the application's own Vary
            else:
                response.headers.add(name, value)

    def _drive_lifetime(self, app: Flask, inner: Session) -> None:
        """``session.permanent`` sets the core lifetime, before the commit.

        A permanent session gets ``PERMANENT_SESSION_LIFETIME`` as its own
        sliding lifetime (``Session.set_lifetime``): the record lives that
        long after its last save or touch, as the cookie does; a changed
        setting is adopted at the session's next request. A session made
        non-permanent in this request goes back to the manager's
        ``idle_timeout``; one that never was keeps any lifetime set through
        ``session.shoal``. With ``SESSION_REFRESH_EACH_REQUEST`` and a
        manager whose reads never touch (``touch_interval=None``), a stored
        permanent session is saved on every request (``refresh()``), so its
        expiry slides with its cookie's; with touches, the read's touch
        slides it (at most ``touch_interval`` behind the cookie).
        """
        permanent = _peek_permanent(inner)
        if permanent:
            wanted: float | None = _seconds(app.permanent_session_lifetime)
        elif _PERMANENT in inner.keys_written:
            wanted = None
        else:
            return
        if inner.lifetime != wanted or (permanent and inner.lifetime_until is not None):
            inner.set_lifetime(wanted)
        if (
            permanent
            and not inner.is_new
            and self.manager.touch_interval is None
            and app.config["SESSION_REFRESH_EACH_REQUEST"]
        ):
            inner.refresh()

    def _persistence(
        self, app: Flask, session: FlaskSession, changed: bool
    ) -> tuple[int | None, bool]:
        """The cookie's Max-Age, and whether to re-send the id of a stored session.

        Flask's ``should_set_cookie``, for an id that does not change: a
        persistent cookie is re-sent when the session changed, or on every
        request with ``SESSION_REFRESH_EACH_REQUEST``, so its expiry slides;
        a browser-session cookie only when the view set ``modified = True``.
        Read after the commit (the session stays readable), so ``_permanent``
        is never part of what the request read for the optimistic policy.
        """
        inner = session.shoal
        if not inner.loaded:  # nothing stored was read: nothing to refresh
            return None, False
        permanent = bool(inner.get(_PERMANENT, False))
        stored = not inner.is_new  # loaded from the store (a new one is sent anyway)
        slide = changed or bool(app.config["SESSION_REFRESH_EACH_REQUEST"])
        refresh = stored and (session._force or (permanent and slide))
        if not permanent:
            return None, refresh
        seconds = _seconds(app.permanent_session_lifetime)
        # The cookie never outlives the session's absolute expiry.
        left = inner.created + self.manager.absolute_timeout - self.manager.clock()
        return max(0, int(min(seconds, left))), refresh

    def _replace(
        self,
        response: Response,
        inner: Session,
        exc: StoreUnavailable | LockTimeout | ConflictError | LockLost,
    ) -> None:
        """The application's response becomes the store error's answer, in place."""
        status, headers, body = answer_error(self.manager, inner, exc)
        old = response.response
        response.status = status
        response.headers = ResponseHeaders(headers)
        response.set_data(body)
        close = getattr(old, "close", None)
        if close is not None:
            close()

    def answer(self, exc: StoreUnavailable | LockTimeout | ConflictError | LockLost) -> Response:
        """Flask's error handler for a store error raised in a view (the lazy load)."""
        session = request.environ.get(_FLASK_KEY)
        if isinstance(session, FlaskSession) and not session.done:
            session.done = True
            status, headers, body = answer_error(self.manager, session.shoal, exc)
        else:  # the session was already closed: nothing to roll back
            log.info("session error, answering with an error: %s", exc)
            status, headers, body = error_response(exc)
        return Response(body, status=status, headers=headers)

    def rollback(self, session: FlaskSession) -> None:
        """Drop the request's changes and release its lease, at once."""
        if not session.done:
            session.done = True
            rollback_quietly(self.manager, session.shoal)

    def _on_exception(self, sender: Flask, exception: BaseException, **_: Any) -> None:
        """``got_request_exception``: the view failed; roll back before the 500 page."""
        self._rollback_current()

    def _on_teardown(self, exc: BaseException | None) -> None:
        """The request context ends: whatever is still open is rolled back."""
        self._rollback_current()

    def _rollback_current(self) -> None:
        session = request.environ.get(_FLASK_KEY)
        if isinstance(session, FlaskSession):
            self.rollback(session)


def _seconds(lifetime: timedelta | float) -> float:
    """``PERMANENT_SESSION_LIFETIME`` (a timedelta, or seconds) in seconds."""
    return lifetime.total_seconds() if isinstance(lifetime, timedelta) else float(lifetime)


def _peek_permanent(inner: Session) -> bool:
    """``session.permanent``, read without counting as a read of the request.

    So the optimistic policy never reports a conflict on Flask's own key.
    """
    return inner._decoded(_PERMANENT) and bool(inner._values[_PERMANENT])


def current_session() -> Session:
    """This request's ``shoal.Session`` (what ``flask.session.shoal`` is), typed as such.

    ``flask.session`` is typed as Flask's ``SessionMixin``; type-checked code
    reaches ``rotate()``, ``lock()``, ``set(..., ttl=)`` and tokens here.
    """
    found = request.environ.get(ENVIRON_KEY)
    if not isinstance(found, Session):
        raise ConfigError(
            "no shoal session in this request: call shoal.flask.init_app(app, manager) "
            "when the app is created"
        )
    return found


def init_app(app: Flask, manager: SessionManager) -> ShoalSessionInterface:
    """Make ``flask.session`` a shoal session of ``manager`` for ``app``.

    Checks the cookie settings now (a bad ``SESSION_COOKIE_*`` value is a
    ``ConfigError`` here, not at the first request), registers the 503/409
    answers for store errors raised in views, and the rollback of a failed
    request. Returns the installed interface.
    """
    interface = ShoalSessionInterface(manager)
    if interface.fixed_cookie is not None:
        changed = [
            key for key in _COOKIE_SETTINGS if app.config.get(key) != Flask.default_config[key]
        ]
        if changed:
            raise ConfigError(
                f"the manager has cookie options of its own (cookie={manager.cookie!r}) and "
                f"the app sets {', '.join(changed)}: give the cookie settings in one place, "
                "either app.config (and SessionManager without cookie=) or the manager's "
                "cookie= (and no SESSION_COOKIE_* settings)"
            )
    interface.cookie_options(app)
    app.session_interface = interface
    for error in ANSWERED:
        app.register_error_handler(error, interface.answer)
    got_request_exception.connect(interface._on_exception, app)
    app.teardown_request(interface._on_teardown)
    return interface
