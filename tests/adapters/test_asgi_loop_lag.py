"""A stalled store never stalls the ASGI event loop (issue 10, item 2).

The ASGI middleware runs every store call in a worker thread
(``shoal.asgi._in_thread``). These tests stall a real store for seconds,
with a request of the ASGI app waiting on it, and watch the app's own event
loop meanwhile:

- **Redis SIGSTOPped**: a private ``redis-server`` (tests/servers) is stopped
  with SIGSTOP: its sockets stay open and nothing answers, so the load
  waits (the URL's ``socket_timeout`` is far longer than the stall).
- **SQLite write lock held by another process**: a child process holds
  ``BEGIN IMMEDIATE`` on the database file, so the ``serialized`` load (it
  writes the lease) waits in SQLite's busy handler.

While the stalled request waits, a loop-lag probe (``asyncio.sleep`` of
1 ms in a loop, measuring how late each wake-up is) runs on the same loop,
and other requests are served to the end: ones without a session cookie on
the stalled app (no store I/O at all) and ones with a cookie on an app over
another store (memory: their I/O runs in other worker threads). The stall
is released only after they were all answered and the stall lasted
``STALL`` seconds; the stalled request then completes with its increment.

Why ratios and not "under 3 ms": our rule is no wall-clock thresholds in
unit tests, and this machine is shared (one probe wake-up can be late by
hundreds of milliseconds when other processes hold both cores). What the
test must tell apart is a loop that ran the store call, whose probe is
late by the whole stall at least once (worst lag / stall >= 1), from one
that did not, whose probe is late by scheduler noise. So, against a stall
of ``STALL`` = 3 s:

- the worst lag stays under ``STALL / WORST_RATIO`` (1/4: 750 ms), a margin
  of four from a blocked loop that still tolerates a loaded machine;
- the median lag stays under ``STALL / MEDIAN_RATIO`` (1/300: 10 ms): the
  "few milliseconds" the issue asks for, as the typical wake-up.

The functional proof needs no clock at all: the other requests are
answered while the stalled one is still pending, which a blocked loop
cannot do. The measured numbers are printed (``-s``) for the note: on an
idle machine the worst lag is a few ms and the median ~0.1 ms.
"""

from __future__ import annotations

import asyncio
import os
import signal
import statistics
import subprocess
import sys
import threading
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx
import pytest
from starlette.applications import Starlette
from starlette.middleware import Middleware
from starlette.requests import Request
from starlette.responses import PlainTextResponse, Response
from starlette.routing import Route

from shoal import SessionManager
from shoal.asgi import SessionMiddleware
from shoal.stores import open_store
from shoal.stores.base import Store
from tests.servers import RedisServer
from tests.servers.availability import redis_unavailable, skip_or_fail

STALL = 3.0  # seconds the store stays stalled, at least
WORST_RATIO = 4  # the worst probe lag stays under STALL / WORST_RATIO
MEDIAN_RATIO = 300  # the median probe lag stays under STALL / MEDIAN_RATIO
PROBE_INTERVAL = 0.001
OTHERS = 10  # requests of each kind served during the stall
PATIENCE = 60.0  # bound of every wait (the stall's start, the stalled request's end)


class EnteredStore:
    """Forwards to a real store; ``entered`` is set when a ``load`` reaches it.

    Instrumentation only (the store is the real one): it lets the test wait
    on an event for "the request is now in the store call", not on a sleep.
    """

    def __init__(self, inner: Store) -> None:
        self.inner = inner
        self.url = inner.url
        self.entered = threading.Event()

    def load(self, *args: Any, **kwargs: Any) -> Any:
        self.entered.set()
        return self.inner.load(*args, **kwargs)

    def __getattr__(self, name: str) -> Any:
        return getattr(self.inner, name)


async def counter(request: Request) -> Response:
    request.session["n"] = request.session.get("n", 0) + 1
    return PlainTextResponse(f"n={request.session['n']}")


async def nothing(request: Request) -> Response:
    return PlainTextResponse("no session")


def make_app(manager: SessionManager) -> Starlette:
    routes = [Route("/", counter), Route("/nothing", nothing)]
    return Starlette(routes=routes, middleware=[Middleware(SessionMiddleware, manager=manager)])


def stored(manager: SessionManager, n: int) -> str:
    """The id of a stored session whose counter is ``n``."""
    with manager.open() as session:
        session["n"] = n
    return session.id


@dataclass
class Measured:
    stalled_for: float  # seconds the stalled request took
    worst_lag: float  # the probe's worst lateness, seconds
    median_lag: float
    probes: int  # how many probe wake-ups were measured
    others_served: int  # other requests answered while the stalled one waited
    stalled_answer: str


def _cookie(session_id: str) -> dict[str, str]:
    return {"cookie": f"shoal={session_id}"}


async def _probe(stop: asyncio.Event, lags: list[float]) -> None:
    """Measure how late each 1 ms sleep of this loop wakes up, until ``stop``."""
    while not stop.is_set():
        before = time.perf_counter()
        await asyncio.sleep(PROBE_INTERVAL)
        lags.append(max(0.0, time.perf_counter() - before - PROBE_INTERVAL))


async def _scenario(
    stalled_app: Starlette,
    stalled_id: str,
    entered: threading.Event,
    other_app: Starlette,
    other_id: str,
    release: Callable[[], None],
) -> Measured:
    """Stall one request, serve the others meanwhile, release the stall; see the module."""
    lags: list[float] = []
    stop = asyncio.Event()
    stalled_client = httpx.AsyncClient(
        transport=httpx.ASGITransport(app=stalled_app), base_url="http://t", timeout=PATIENCE
    )
    other_client = httpx.AsyncClient(
        transport=httpx.ASGITransport(app=other_app), base_url="http://o", timeout=PATIENCE
    )
    async with stalled_client, other_client:
        # Warm up (Starlette builds its middleware stack at the first request),
        # without a cookie on the stalled app: no store I/O there.
        assert (await stalled_client.get("/nothing")).status_code == 200
        assert (await other_client.get("/", headers=_cookie(other_id))).status_code == 200
        probe = asyncio.create_task(_probe(stop, lags))
        started = time.perf_counter()
        stalled = asyncio.create_task(stalled_client.get("/", headers=_cookie(stalled_id)))
        # Wait, on an event, until the request is in the stalled store call.
        reached = asyncio.create_task(asyncio.to_thread(entered.wait, PATIENCE))
        await asyncio.wait({stalled, reached}, return_when=asyncio.FIRST_COMPLETED)
        if stalled.done():
            reached.cancel()
            took = time.perf_counter() - started
            raise AssertionError(
                f"the stalled request ended ({stalled.result()!r}, after {took:.1f} s) before "
                "any other request could be served: did a store call block the loop?"
            )
        assert await reached, "the load never reached the store"
        served = 0
        for _ in range(OTHERS):
            fresh = await stalled_client.get("/nothing")
            assert (fresh.status_code, fresh.text) == (200, "no session")
            other = await other_client.get("/", headers=_cookie(other_id))
            assert other.status_code == 200, other.text
            assert not stalled.done(), "the stall ended before the others were served"
            served += 2
        # Hold the stall for STALL seconds in all (the probe keeps measuring).
        left = STALL - (time.perf_counter() - started)
        if left > 0:
            done, _ = await asyncio.wait({stalled}, timeout=left)
            assert not done, "the stalled request ended before the store was released"
        release()
        response = await asyncio.wait_for(stalled, PATIENCE)
        stalled_for = time.perf_counter() - started
    stop.set()
    await probe
    return Measured(
        stalled_for, max(lags), statistics.median(lags), len(lags), served, response.text
    )


def _check(measured: Measured, label: str) -> None:
    print(
        f"\n{label}: store stalled {measured.stalled_for:.2f} s; loop probe worst lag "
        f"{measured.worst_lag * 1000:.2f} ms (median {measured.median_lag * 1000:.2f} ms) over {measured.probes} wake-ups; "
        f"{measured.others_served} other requests served meanwhile"
    )
    assert measured.stalled_answer == "n=2", "the stalled request completes once released"
    assert measured.stalled_for >= STALL, "the store call really was stalled"
    assert measured.probes >= 100, "the probe ran throughout the stall"
    assert measured.worst_lag < STALL / WORST_RATIO, (
        f"the event loop lagged {measured.worst_lag * 1000:.0f} ms during a "
        f"{measured.stalled_for:.1f} s stall: did a store call run on the loop?"
    )
    assert measured.median_lag < STALL / MEDIAN_RATIO, (
        f"the loop's median lag was {measured.median_lag * 1000:.1f} ms during the stall"
    )


@pytest.fixture
def other_store() -> tuple[Starlette, str]:
    """An app over another store (memory) and a stored session of it."""
    manager = SessionManager("memory://", app_id="other")
    return make_app(manager), stored(manager, n=1)


@pytest.fixture
def private_redis() -> Iterator[RedisServer]:
    """A Redis of this test's own: SIGSTOP disturbs no other test."""
    reason = redis_unavailable()
    if reason is not None:
        skip_or_fail(reason)
    with RedisServer() as server:
        yield server


def test_redis_sigstopped_leaves_the_loop_free(
    private_redis: RedisServer, other_store: tuple[Starlette, str], app_id: str
) -> None:
    # The socket timeout is far longer than the stall: the load waits for SIGCONT.
    store = EnteredStore(open_store(f"{private_redis.url}?socket_timeout=20"))
    manager = SessionManager(store, app_id=app_id, policy="merge")
    session_id = stored(manager, n=1)
    store.entered.clear()
    pid = private_redis.pid
    assert pid is not None
    os.kill(pid, signal.SIGSTOP)  # our own child: connections open, no answers
    try:
        measured = asyncio.run(
            _scenario(
                make_app(manager), session_id, store.entered, *other_store,
                release=lambda: os.kill(pid, signal.SIGCONT),
            )  # fmt: skip
        )
    finally:
        os.kill(pid, signal.SIGCONT)
        manager.close()
    _check(measured, "redis SIGSTOP")


_LOCKER = """
import sqlite3, sys
conn = sqlite3.connect(sys.argv[1], isolation_level=None)
conn.execute("BEGIN IMMEDIATE")
print("locked", flush=True)
sys.stdin.readline()
conn.execute("ROLLBACK")
conn.close()
"""


@contextmanager
def write_lock_in_another_process(path: Path) -> Iterator[Callable[[], None]]:
    """A child process holds SQLite's write lock on ``path``; yields its release."""
    proc = subprocess.Popen(
        [sys.executable, "-c", _LOCKER, str(path)],
        stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True,
    )  # fmt: skip
    assert proc.stdin is not None and proc.stdout is not None
    stdin = proc.stdin

    def release() -> None:
        if not stdin.closed:
            stdin.write("\n")
            stdin.close()

    try:
        assert proc.stdout.readline().strip() == "locked", "the locker did not take the lock"
        yield release
    finally:
        release()
        try:
            proc.wait(timeout=PATIENCE)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait(timeout=10)
        proc.stdout.close()


def test_sqlite_locked_by_another_process_leaves_the_loop_free(
    tmp_path: Path, other_store: tuple[Starlette, str], app_id: str
) -> None:
    path = tmp_path / "sessions.db"
    # The busy timeout is far longer than the stall: the load waits for the release.
    store = EnteredStore(open_store(f"sqlite://{path}?busy_timeout=20"))
    # serialized: the load writes the lease, so it waits for the write lock.
    manager = SessionManager(store, app_id=app_id, policy="serialized")
    session_id = stored(manager, n=1)
    store.entered.clear()
    try:
        with write_lock_in_another_process(path) as release:
            measured = asyncio.run(
                _scenario(
                    make_app(manager), session_id, store.entered, *other_store, release=release
                )
            )
    finally:
        manager.close()
    _check(measured, "sqlite write lock")
