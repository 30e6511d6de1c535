"""A Flask app for the multi-process tests: ``flask.session`` counts.

Run by gunicorn in worker processes; the store comes from ``$SHOAL_STORE``
and the policy from ``$SHOAL_POLICY`` (``serialized`` unless set). ``GET /``
counts in one key, ``n``; with an ``X-Count-Key`` header it counts in that
key alone (``tests.adapters._increments.check_per_key_increments``).
"""

from __future__ import annotations

import os

from flask import Flask, request, session

from shoal import SessionManager
from shoal.flask import init_app

from ._increments import COUNT_KEY_HEADER

app = Flask(__name__)
policy = os.environ.get("SHOAL_POLICY", "serialized")
init_app(app, SessionManager(os.environ["SHOAL_STORE"], app_id="flask", policy=policy))


@app.get("/")
def count() -> dict[str, object]:
    key = request.headers.get(COUNT_KEY_HEADER)
    if key is not None:
        session[key] = session.get(key, 0) + 1
        return {"n": session[key], "pid": os.getpid(), "session": dict(session)}
    session["n"] = session.get("n", 0) + 1
    pids = session.setdefault("pids", [])
    if os.getpid() not in pids:
        pids.append(os.getpid())
    return {"n": session["n"], "pid": os.getpid(), "pids": pids}
