"""The demo application: a shopping session, as a plain WSGI app with shoal.

    GET  /                  what the session holds
    POST /cart?item=NAME    append NAME to the cart
    POST /count?key=NAME    add 1 to the counter NAME
    POST /login?user=NAME   give the session a new id (rotate), remember the user
    POST /logout            end the session; its id is refused from now on

Every answer is JSON naming the worker process (``pid``) that served it, so
a client can see that any process can serve any request of a session.
"""

from __future__ import annotations

import os
from collections.abc import Callable, Iterable
from typing import TYPE_CHECKING, Any
from urllib.parse import parse_qsl

import orjson

from ..manager import SessionManager
from ..session import Session
from ..wsgi import SessionMiddleware

if TYPE_CHECKING:
    from _typeshed.wsgi import StartResponse, WSGIApplication, WSGIEnvironment

__all__ = ["build_app"]

Route = Callable[[Session, dict[str, str]], None]


def _show(session: Session, query: dict[str, str]) -> None:
    pass  # the answer below lists the session anyway


def _add_to_cart(session: Session, query: dict[str, str]) -> None:
    session["cart"] = [*session.get("cart", []), query["item"]]


def _count(session: Session, query: dict[str, str]) -> None:
    # Requests that count different keys never lose each other's writes
    # under the default "merge" policy, even when they run at the same time.
    session[query["key"]] = session.get(query["key"], 0) + 1


def _login(session: Session, query: dict[str, str]) -> None:
    session.rotate(grace=0)  # a new id at login: an id planted before it becomes useless
    session["user"] = query["user"]


def _logout(session: Session, query: dict[str, str]) -> None:
    session.invalidate()


ROUTES: dict[tuple[str, str], Route] = {
    ("GET", "/"): _show,
    ("POST", "/cart"): _add_to_cart,
    ("POST", "/count"): _count,
    ("POST", "/login"): _login,
    ("POST", "/logout"): _logout,
}


def demo_app(environ: WSGIEnvironment, start_response: StartResponse) -> Iterable[bytes]:
    """The routes above; the session comes from ``SessionMiddleware``."""
    session: Session = environ["shoal.session"]
    route = ROUTES.get((environ["REQUEST_METHOD"], environ.get("PATH_INFO") or "/"))
    query = dict(parse_qsl(environ.get("QUERY_STRING", "")))
    answer: dict[str, Any]
    if route is None:
        status, answer = "404 Not Found", {"error": "no such route", "routes": _route_names()}
    else:
        try:
            route(session, query)
        except KeyError as missing:
            status, answer = "400 Bad Request", {"error": f"missing parameter {missing}"}
        else:
            # Read the session before start_response: shoal saves it there.
            status, answer = "200 OK", {"session": dict(session), "new": session.is_new}
    body = orjson.dumps({"pid": os.getpid(), **answer})
    start_response(status, [("Content-Type", "application/json")])
    return [body]


def _route_names() -> list[str]:
    return [f"{method} {path}" for method, path in ROUTES]


def build_app(manager: SessionManager) -> WSGIApplication:
    """The demo app wrapped in shoal's middleware, with sessions from ``manager``."""
    return SessionMiddleware(demo_app, manager)
