"""A Starlette app for the multi-process tests: counts requests in ``request.session``.

Run by uvicorn in worker processes; the store comes from ``$SHOAL_STORE``
and the policy from ``$SHOAL_POLICY`` (``serialized`` unless set). ``GET /``
counts in one key, ``n``; with an ``X-Count-Key`` header it counts in that
key alone (``tests.adapters._increments.check_per_key_increments``).
"""

from __future__ import annotations

import asyncio
import os

from starlette.applications import Starlette
from starlette.middleware import Middleware
from starlette.requests import Request
from starlette.responses import JSONResponse
from starlette.routing import Route

from shoal import SessionManager
from shoal.asgi import SessionMiddleware

from ._increments import COUNT_KEY_HEADER


async def counter(request: Request) -> JSONResponse:
    session = request.session
    key = request.headers.get(COUNT_KEY_HEADER)
    if key is not None:
        session[key] = session.get(key, 0) + 1
        return JSONResponse({"n": session[key], "pid": os.getpid(), "session": dict(session)})
    session["n"] = session.get("n", 0) + 1
    pids = session.setdefault("pids", [])
    if os.getpid() not in pids:
        pids.append(os.getpid())
    # Hold the session briefly so concurrent requests overlap across workers.
    await asyncio.sleep(0.005)
    return JSONResponse({"pid": os.getpid(), "n": session["n"], "pids": session["pids"]})


manager = SessionManager(
    os.environ["SHOAL_STORE"], app_id="uvicorn", policy=os.environ.get("SHOAL_POLICY", "serialized")
)
app = Starlette(
    routes=[Route("/", counter)], middleware=[Middleware(SessionMiddleware, manager=manager)]
)
