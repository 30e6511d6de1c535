"""A FastAPI app whose route opens its session under ``serialized``, on the embedded store.

Run it (from the repository root, with the virtualenv of the README):

    .venv/bin/uvicorn --workers 2 --app-dir examples fastapi_app:app

then open http://127.0.0.1:8000/ and reload: the visit count goes up
whichever worker answers, and concurrent requests of one visitor never lose
an increment (the route holds the session's lease from load to save).
``/whoami`` only reads the session: no lock, no save.
"""

from __future__ import annotations

import os
from typing import Any

from fastapi import Depends, FastAPI

from shoal import SessionManager
from shoal.fastapi import SessionRoute, session_dependency
from shoal.session import Session

manager = SessionManager(app_id="fastapi-example")
app = FastAPI()
app.router.route_class = SessionRoute  # commits the route's session before the response
locked = session_dependency(manager, policy="serialized")
reading = session_dependency(manager, read_only=True)


@app.get("/")
def count_visits(session: Session = Depends(locked)) -> dict[str, Any]:
    session["n"] = session.get("n", 0) + 1
    pids = session.setdefault("pids", [])  # which workers served this visitor
    if os.getpid() not in pids:
        pids.append(os.getpid())
    return {"n": session["n"], "pid": os.getpid(), "pids": pids}


@app.get("/whoami")
async def whoami(session: Session = Depends(reading)) -> dict[str, Any]:
    return {"visits": session.get("n", 0), "new": session.is_new}
