"""A plain WSGI application with shoal's middleware, on the embedded store.

Run it (from the repository root, with the virtualenv of the README):

    .venv/bin/gunicorn --workers 2 --chdir examples wsgi_app:app

then open http://127.0.0.1:8000/ and reload: the visit count goes up
whichever worker answers. Sessions live in the embedded SQLite file
(``$SHOAL_STORE`` if set), shared by every process of the host. The count
is kept under the ``serialized`` policy, so concurrent requests of one
visitor never lose an increment.
"""

from __future__ import annotations

import json
import os
from collections.abc import Callable, Iterable
from typing import Any

from shoal import SessionManager
from shoal.session import Session
from shoal.wsgi import ENVIRON_KEY, SessionMiddleware

StartResponse = Callable[[str, list[tuple[str, str]]], Any]


def count_visits(environ: dict[str, Any], start_response: StartResponse) -> Iterable[bytes]:
    session: Session = environ[ENVIRON_KEY]
    session["n"] = session.get("n", 0) + 1
    pids = session.setdefault("pids", [])  # which workers served this visitor
    if os.getpid() not in pids:
        pids.append(os.getpid())
    body = json.dumps({"n": session["n"], "pid": os.getpid(), "pids": pids}).encode()
    start_response("200 OK", [("Content-Type", "application/json")])
    return [body]


app = SessionMiddleware(count_visits, SessionManager(app_id="wsgi-example", policy="serialized"))
