"""A FastAPI app for the multi-process tests: a route's session through the dependency.

Run by uvicorn in worker processes; the store comes from ``$SHOAL_STORE``
and the policy from ``$SHOAL_POLICY`` (``merge`` unless set). ``GET /``
counts in the key the ``X-Count-Key`` header names
(``tests.adapters._increments.check_per_key_increments``).
"""

from __future__ import annotations

import os
from typing import Any

from fastapi import Depends, FastAPI, Header

from shoal import SessionManager
from shoal.fastapi import SessionRoute, session_dependency
from shoal.session import Session

manager = SessionManager(os.environ["SHOAL_STORE"], app_id="fastapi")
app = FastAPI()
app.router.route_class = SessionRoute  # commits the route's session before the response
opened = session_dependency(manager, policy=os.environ.get("SHOAL_POLICY", "merge"))


@app.get("/")
def count(
    session: Session = Depends(opened), x_count_key: str = Header(default="n")
) -> dict[str, Any]:
    session[x_count_key] = session.get(x_count_key, 0) + 1
    return {"n": session[x_count_key], "pid": os.getpid(), "session": dict(session)}
