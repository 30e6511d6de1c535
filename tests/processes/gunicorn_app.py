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


# -- retry_conflicts under gunicorn, which sets wsgi.input_terminated on every request

_retry_manager = SessionManager(
    os.environ["SHOAL_STORE"], app_id="gunicorn-retry", policy="optimistic"
)
_runs: dict[str, int] = {}  # runs per X-Request-Id, in this worker process


def conflicting(environ: dict[str, Any], start_response: Callable[..., Any]) -> Iterable[bytes]:
    """Adds 1 to ``n``; a request's first run loses a race on ``n`` to a concurrent write."""
    session = environ["shoal.session"]
    request_id = environ.get("HTTP_X_REQUEST_ID", "")
    _runs[request_id] = runs = _runs.get(request_id, 0) + 1
    n = session.get("n", 0)
    if runs == 1 and request_id and not session.is_new:
        with _retry_manager.open(session.id) as other:
            other["n"] = n + 100
    session["n"] = n + 1
    start_response("200 OK", [("Content-Type", "application/json")])
    return [orjson.dumps({"n": session["n"], "runs": runs})]


retry_app = SessionMiddleware(conflicting, _retry_manager, retry_conflicts=1)
