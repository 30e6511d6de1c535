"""A Flask app for the multi-process test: ``flask.session`` counts under ``serialized``.

Run by gunicorn in worker processes; the store comes from ``$SHOAL_STORE``.
"""

from __future__ import annotations

import os

from flask import Flask, session

from shoal import SessionManager
from shoal.flask import init_app

app = Flask(__name__)
init_app(app, SessionManager(os.environ["SHOAL_STORE"], app_id="flask", policy="serialized"))


@app.get("/")
def count() -> dict[str, object]:
    session["n"] = session.get("n", 0) + 1
    pids = session.setdefault("pids", [])
    if os.getpid() not in pids:
        pids.append(os.getpid())
    return {"n": session["n"], "pid": os.getpid(), "pids": pids}
