"""FastAPI: a dependency that opens the session for one route, ``read_only`` or ``serialized``.

::

    app = FastAPI()
    app.router.route_class = shoal.fastapi.SessionRoute      # before the routes
    locked = shoal.fastapi.session_dependency(manager, policy="serialized")

    @app.post("/count")
    def count(session: Session = Depends(locked)) -> int:
        session["n"] = session.get("n", 0) + 1
        return session["n"]

The dependency reads the id (the manager's cookie, or ``transport=``),
opens the session with the route's mode and loads it awaited, on the
manager's async path (``abegin``), never blocking the event loop. ``SessionRoute`` commits it when the endpoint has
returned its response and before the response is sent, so Set-Cookie
(a new or rotated id, a logout) goes out with it; a store error becomes the
same 503/409 answer as the middleware's. An exception in the endpoint rolls
back and releases the lease at once.

It works standalone or beside ``shoal.asgi.SessionMiddleware``: the route's
session is opened on its own (the middleware's ``request.session`` is then a
second view of the same id that the route should not write). Do not combine
a ``serialized`` dependency with a middleware whose manager is itself
``serialized``: both would wait for the one lease.

Rejected: a ``yield`` dependency alone. FastAPI runs its exit code after the
response headers are fixed (``scope="function"``) or after the response was
sent (``scope="request"``), so it could not set the cookie of a new session,
nor answer a refused save with 409.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable, Coroutine
from functools import partial
from typing import Any, Final

from fastapi import Request, Response
from fastapi.routing import APIRoute

from .errors import ConfigError
from .manager import CommitOutcome, SessionManager
from .policies import Policy
from .session import Session
from .transports import ANSWERED, Incoming, Transport, transport_for
from .asgi import _scope_header, answer_error, rollback_quietly

__all__ = ["SessionRoute", "session_dependency"]

_OPENED: Final = "shoal.fastapi.opened"
_Opened = list[tuple[SessionManager, Transport, Session, Incoming]]


def session_dependency(
    manager: SessionManager,
    *,
    read_only: bool = False,
    policy: str | Policy | None = None,
    transport: Transport | None = None,
) -> Callable[[Request], Awaitable[Session]]:
    """A FastAPI dependency giving the route the ``shoal.Session`` of the request.

    ``read_only=True``: no lock, no save, writes raise ``SessionStateError``.
    ``policy="serialized"``: the route holds the session's lease from the
    load until the commit, whatever the manager's own policy. Needs
    ``SessionRoute`` as the route class (a ``ConfigError`` says so).
    """
    chosen = transport_for(manager, transport)
    if policy is not None and read_only and Policy(policy).locks:
        raise ConfigError("read_only=True takes no lock: drop policy='serialized' or read_only")

    async def shoal_session(request: Request) -> Session:
        opened: _Opened | None = request.scope.get(_OPENED)
        if opened is None:
            raise ConfigError(
                "shoal.fastapi.session_dependency needs its route class: set "
                "app.router.route_class = shoal.fastapi.SessionRoute (or "
                "APIRouter(route_class=SessionRoute)) before adding the routes"
            )
        # The scope's headers as the ASGI middleware reads them, not
        # ``request.headers.get`` (the first of several only): HTTP/2 sends a
        # ``cookie`` header per cookie, and the size limit is on them all.
        incoming = chosen.read(partial(_scope_header, request.scope))
        session = manager._async_session(
            incoming.session_id, read_only=read_only, policy=policy, replica=incoming.replica
        )
        session._set_end(
            "when the route returned its response", "write before the endpoint returns"
        )
        opened.append((manager, chosen, session, incoming))
        await manager._aload(session)  # loaded (and locked) now: no blocking __getitem__
        return session

    return shoal_session


class SessionRoute(APIRoute):
    """The route class that commits ``session_dependency`` sessions before the response goes out."""

    def get_route_handler(self) -> Callable[[Request], Coroutine[Any, Any, Response]]:
        handler = super().get_route_handler()

        async def with_sessions(request: Request) -> Response:
            opened: _Opened = []
            request.scope[_OPENED] = opened
            try:
                response = await handler(request)
            except ANSWERED as exc:  # raised by a load in the dependency or the endpoint
                return await _answer(opened, exc)
            except BaseException:
                await _rollback(opened)
                raise
            https = request.url.scheme == "https"
            for index, (manager, transport, session, incoming) in enumerate(opened):
                try:
                    outcome: CommitOutcome = await manager.acommit(session)
                except ANSWERED as exc:
                    return await _answer(opened[index:], exc)
                except BaseException:
                    await _rollback(opened[index:])
                    raise
                for name, value in transport.response_headers(
                    outcome, incoming, https=https, vary=session.loaded
                ):
                    response.headers.append(name, value)
            return response

        return with_sessions


async def _rollback(opened: _Opened) -> None:
    for manager, _, session, _ in opened:
        await rollback_quietly(manager, session)


async def _answer(opened: _Opened, exc: Exception) -> Response:
    """Roll every session back; the store error's 503/409 answer replaces the response."""
    assert isinstance(exc, ANSWERED)
    if not opened:
        from .transports import error_response

        status, headers, body = error_response(exc)
    else:
        manager, _, first, _ = opened[0]
        status, headers, body = await answer_error(manager, first, exc)
        await _rollback(opened[1:])
    response = Response(body, status_code=int(status.split()[0]))
    for name, value in headers:
        if name.lower() != "content-length":
            response.headers[name] = value
    return response
