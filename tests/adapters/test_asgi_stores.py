"""The ASGI middleware on every store, through the manager's async path.

The manager is built from the store's URL, as an application builds it, so
Redis runs on its native ``redis.asyncio`` twin and the other stores on
store threads. Concurrent requests are real: ``asyncio.gather`` over
httpx's ASGI transport runs them interleaved on one event loop, where a
blocking store call would serialize them and a lost update would show.
"""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable

import httpx
import pytest
from starlette.applications import Starlette
from starlette.middleware import Middleware
from starlette.requests import Request
from starlette.responses import PlainTextResponse, Response
from starlette.routing import Route

from shoal import SessionManager
from shoal.asgi import SCOPE_KEY, SessionMiddleware
from shoal.session import Session

CLIENTS = 8
INCREMENTS = 5


async def count(request: Request) -> Response:
    request.session["n"] = request.session.get("n", 0) + 1
    return PlainTextResponse(str(request.session["n"]))


async def mark(request: Request) -> Response:
    key = request.path_params["key"]
    request.session[key] = request.session.get(key, 0) + 1
    return PlainTextResponse("ok")


async def show(request: Request) -> Response:
    return PlainTextResponse(repr(sorted(request.session.items())))


async def logout(request: Request) -> Response:
    session: Session = request.scope[SCOPE_KEY]
    session.invalidate()
    return PlainTextResponse("bye")


async def once(request: Request) -> Response:
    session: Session = request.scope[SCOPE_KEY]
    if "issue" in request.query_params:
        return PlainTextResponse(session.issue_token("pay"))
    used = await session.aconsume_token("pay", request.query_params["token"])
    return PlainTextResponse("paid" if used else "refused")


def _app(manager: SessionManager) -> Starlette:
    routes = [
        Route("/count", count, methods=["POST"]),
        Route("/mark/{key}", mark, methods=["POST"]),
        Route("/show", show),
        Route("/logout", logout, methods=["POST"]),
        Route("/once", once, methods=["POST"]),
    ]
    return Starlette(routes=routes, middleware=[Middleware(SessionMiddleware, manager=manager)])


Scenario = Callable[[httpx.AsyncClient], Awaitable[None]]


@pytest.fixture(params=["merge", "serialized"])
def serve(request: pytest.FixtureRequest, store_url: str, app_id: str) -> Callable[[Scenario], None]:
    """Run a scenario against the app on a fresh event loop, the manager made from the URL."""

    def run(scenario: Scenario) -> None:
        async def main() -> None:
            manager = SessionManager(
                store_url, app_id=app_id, policy=request.param, lock_timeout=20.0,
                lock_lease=30.0,
            )  # fmt: skip
            try:
                transport = httpx.ASGITransport(app=_app(manager))
                async with httpx.AsyncClient(transport=transport, base_url="http://t") as http:
                    await scenario(http)
            finally:
                await manager.aclose()

        asyncio.run(main())

    return run


async def _start(http: httpx.AsyncClient) -> str:
    response = await http.post("/count")
    assert response.text == "1"
    return response.cookies["shoal"]


def _with(cookie: str) -> dict[str, str]:
    return {"cookie": f"shoal={cookie}"}


def test_a_session_carries_across_requests(serve: Callable[[Scenario], None]) -> None:
    serve(_carries)


async def _carries(client: httpx.AsyncClient) -> None:
    cookie = await _start(client)
    client.cookies.clear()
    assert (await client.post("/count", headers=_with(cookie))).text == "2"
    assert (await client.get("/show", headers=_with(cookie))).text == "[('n', 2)]"


def test_concurrent_requests_lose_no_write(serve: Callable[[Scenario], None]) -> None:
    """8 clients x 5 requests at once, interleaved on one loop: every write lands."""
    serve(_concurrent)


async def _concurrent(client: httpx.AsyncClient) -> None:
    cookie = await _start(client)
    client.cookies.clear()

    async def one_client(index: int) -> None:
        for _ in range(INCREMENTS):
            response = await client.post(f"/mark/k{index}", headers=_with(cookie))
            assert response.status_code == 200, response.text

    await asyncio.gather(*(one_client(i) for i in range(CLIENTS)))
    shown = (await client.get("/show", headers=_with(cookie))).text
    expected = [(f"k{i}", INCREMENTS) for i in range(CLIENTS)] + [("n", 1)]
    assert shown == repr(sorted(expected))


def test_a_logout_ends_the_session_for_every_later_request(
    serve: Callable[[Scenario], None],
) -> None:
    serve(_logout)


async def _logout(client: httpx.AsyncClient) -> None:
    cookie = await _start(client)
    client.cookies.clear()
    assert (await client.post("/logout", headers=_with(cookie))).text == "bye"
    assert (await client.get("/show", headers=_with(cookie))).text == "[]"


def test_a_once_only_token_is_consumed_once_when_awaited(
    serve: Callable[[Scenario], None],
) -> None:
    serve(_once)


async def _once(client: httpx.AsyncClient) -> None:
    cookie = await _start(client)
    client.cookies.clear()
    token = (await client.post("/once?issue=1", headers=_with(cookie))).text
    answers = await asyncio.gather(
        *(client.post(f"/once?token={token}", headers=_with(cookie)) for _ in range(4))
    )
    assert sorted(a.text for a in answers) == ["paid", "refused", "refused", "refused"]
