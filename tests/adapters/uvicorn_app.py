"""A Starlette app for the multi-process test: counts requests in ``request.session``.

Run by uvicorn in worker processes; the store comes from ``$SHOAL_STORE``.
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


async def counter(request: Request) -> JSONResponse:
    session = request.session
    session["n"] = session.get("n", 0) + 1
    pids = session.setdefault("pids", [])
    if os.getpid() not in pids:
        pids.append(os.getpid())
    # Hold the session briefly so concurrent requests overlap across workers.
    await asyncio.sleep(0.005)
    return JSONResponse({"pid": os.getpid(), "n": session["n"], "pids": session["pids"]})


manager = SessionManager(os.environ["SHOAL_STORE"], app_id="uvicorn", policy="serialized")
app = Starlette(
    routes=[Route("/", counter)], middleware=[Middleware(SessionMiddleware, manager=manager)]
)
