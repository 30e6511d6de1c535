"""A WSGI app for the sessions-by-user process tests: login, whoami, logout everywhere.

Run by gunicorn in worker processes; the store comes from ``$SHOAL_STORE``
and the app id from ``$SHOAL_TEST_APP``. ``/login?user=U`` sets the principal,
``/`` answers who the session belongs to and which process served it.
"""

from __future__ import annotations

import os
from collections.abc import Callable, Iterable
from typing import Any
from urllib.parse import parse_qs

import orjson

from shoal import SessionManager
from shoal.wsgi import SessionMiddleware

manager = SessionManager(
    os.environ["SHOAL_STORE"], app_id=os.environ["SHOAL_TEST_APP"], policy="merge",
    node_id=f"gunicorn-{os.getpid()}",
)  # fmt: skip


def whoami(environ: dict[str, Any], start_response: Callable[..., Any]) -> Iterable[bytes]:
    session = environ["shoal.session"]
    query = parse_qs(environ.get("QUERY_STRING", ""))
    if environ["PATH_INFO"] == "/login":
        session.principal = query["user"][0]
        session["device"] = query.get("device", ["?"])[0]
    elif environ["PATH_INFO"] == "/logout-everywhere":
        ended = manager.invalidate_all(session.principal) if session.principal else 0
        start_response("200 OK", [("Content-Type", "application/json")])
        return [orjson.dumps({"ended": ended, "pid": os.getpid()})]
    body = {"user": session.principal, "device": session.get("device"), "pid": os.getpid()}
    start_response("200 OK", [("Content-Type", "application/json")])
    return [orjson.dumps(body)]


app = SessionMiddleware(whoami, manager)
