"""A WSGI app for the multi-process test: counts requests in the session.

Run by gunicorn in worker processes; the store comes from ``$SHOAL_STORE``.
"""

from __future__ import annotations

import os
import threading
from collections.abc import Callable, Iterable
from typing import Any

import orjson

from shoal import SessionManager
from shoal.wsgi import SessionMiddleware

_work = threading.Event()


def counter(environ: dict[str, Any], start_response: Callable[..., Any]) -> Iterable[bytes]:
    session = environ["shoal.session"]
    session["n"] = session.get("n", 0) + 1
    session.setdefault("pids", [])
    if os.getpid() not in session["pids"]:
        session["pids"].append(os.getpid())
    # Hold the session briefly (bounded) so concurrent requests overlap and
    # the load balancer has to use the other worker.
    _work.wait(0.02)
    body = orjson.dumps({"pid": os.getpid(), "n": session["n"], "pids": session["pids"]})
    start_response("200 OK", [("Content-Type", "application/json")])
    return [body]


app = SessionMiddleware(
    counter, SessionManager(os.environ["SHOAL_STORE"], app_id="gunicorn", policy="serialized")
)
