"""Throughput under gunicorn: each contestant served by 4 sync workers, driven over HTTP.

Each contestant is a latency row's ``Contestant`` (``_latency.groups``: the
same builder, the same store, the same options), wrapped in one small WSGI
app (``wsgi_app``) that every contestant shares: the ``bench`` cookie names
the session; a request without one gets ``new()`` and a cookie, a request
with one runs ``visit`` (load, change one key, save) and answers ``ok``. The
floor is that app with no session at all (``bare WSGI app``), so a row's
ratio is the share of the bare app's throughput it keeps.

gunicorn runs with ``--workers 4`` (sync) on a free loopback port
(``tests/processes/_servers.running_gunicorn``, as the process tests start
it, stopped by its PID). It loads the app in each worker after the fork
(no ``--preload``: a connection opened before the fork would be shared by
four processes); every worker reports through a FIFO once its contestant
is built, so the clock starts with all four serving.

The load generator is ``clients`` processes (spawn), each one connection
and one session cookie of its own: ``warmup`` requests untimed, a barrier,
then at most ``requests`` requests or ``seconds`` seconds, whichever ends
first. gunicorn's sync workers close the connection after every response
(they do not keep connections alive, by design: a slow client would hold a
worker), so each request is a fresh TCP connection on loopback; the client
reuses one when the server allows it. Requests per second count every
answered request over the span from the first client's start to the last
one's end; p50 and p99 are one request's latency as a client saw it.

On a 2-core machine the clients, the four workers and the store's server
share the cores: the absolute numbers are this machine's, the ratios to the
bare app are the figure to compare.
"""

from __future__ import annotations

import http.client
import json
import os
import select
import statistics
import sys
import time
from collections.abc import Callable, Iterable, Iterator
from contextlib import ExitStack, contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from benchmarks._together import p99, together

__all__ = ["BARE", "ServedResult", "app", "print_throughput", "run_throughput", "wsgi_app"]

ROOT = Path(__file__).resolve().parents[1]
BARE = "bare WSGI app"
WORKERS = 4
COOKIE = "bench"
_CONFIG = "SHOAL_BENCH_SERVE"  # the contestant and the run's servers, as JSON
_READY = "SHOAL_BENCH_READY"  # the FIFO each worker writes one byte to once built
_FAILED = b"!"

# The latency rows served here, in the table's order. --quick and --smoke
# serve a subset: shoal on each store under merge, Redis serialized, and the
# peers people run on Redis and SQLite.
SERVED = {
    "full": (
        "shoal sqlite merge", "shoal sqlite serialized", "shoal redis merge",
        "shoal redis serialized", "shoal postgresql merge", "shoal postgresql serialized",
        "beaker file", "beaker ext:redis", "flask-session redis", "django db sqlite",
        "django cache (redis)", "django db postgresql",
    ),
    "quick": (
        "shoal sqlite merge", "shoal redis merge", "shoal redis serialized",
        "shoal postgresql merge", "beaker file", "beaker ext:redis", "flask-session redis",
        "django db sqlite", "django cache (redis)",
    ),
}  # fmt: skip

WSGIApp = Callable[[dict[str, Any], Callable[..., Any]], Iterable[bytes]]


@dataclass
class ServedResult:
    """One contestant under gunicorn: throughput, latency, its share of the bare app's."""

    contestant: str
    clients: int
    requests: int
    errors: int
    seconds: float
    rps: float
    p50_ms: float
    p99_ms: float
    ratio: float  # rps / the bare app's rps


# -- the served side (in each gunicorn worker) --------------------------------------


def wsgi_app(contestant: Any) -> WSGIApp:
    """The one WSGI app every contestant is served by (``None``: the bare app)."""
    from http.cookies import SimpleCookie

    counter = iter(range(sys.maxsize))

    def application(environ: dict[str, Any], start_response: Callable[..., Any]) -> Iterable[bytes]:
        headers = [("Content-Type", "text/plain"), ("Content-Length", "2")]
        if contestant is not None:
            cookie: SimpleCookie = SimpleCookie(environ.get("HTTP_COOKIE", ""))
            sid = cookie[COOKIE].value if COOKIE in cookie else None
            now = contestant.new() if sid is None else contestant.visit(sid, next(counter))
            if now != sid:
                headers.append(("Set-Cookie", f"{COOKIE}={now}; Path=/; HttpOnly"))
        start_response("200 OK", headers)
        return [b"ok"]

    return application


def app() -> WSGIApp:
    """gunicorn's factory (``benchmarks._served:app()``), called in each worker.

    Builds the contestant ``$SHOAL_BENCH_SERVE`` names with the latency part's
    own builder, then writes one byte to the ``$SHOAL_BENCH_READY`` FIFO
    (``!`` and the error on stderr if the build failed).
    """
    config = json.loads(os.environ[_CONFIG])
    try:
        application = wsgi_app(_build(config))
    except BaseException:
        _signal(_FAILED)
        raise
    _signal(b".")
    return application


def _signal(byte: bytes) -> None:
    fd = os.open(os.environ[_READY], os.O_WRONLY)
    try:
        os.write(fd, byte)
    finally:
        os.close(fd)


def _build(config: dict[str, Any]) -> Any:
    name = config["contestant"]
    if name == BARE:
        return None
    import atexit

    from benchmarks import _peers
    from benchmarks._latency import Servers, groups

    servers = Servers(config["tmp"], config["redis_url"], config["pg_url"])
    django = None
    if name.startswith("django"):  # the run's process migrated the tables already
        django = _peers.DjangoPeer(f"{servers.tmp}/django.db", servers.pg_url,
                                   servers.redis_url, migrate=False)  # fmt: skip
    stack = ExitStack()
    atexit.register(stack.close)  # the worker's stores, closed as it exits
    for group in groups(servers, stack, django):
        if name in group.variants:
            built = group.variants[name]()
            assert isinstance(built, _peers.Contestant), f"{name} is not a session library"
            return built
    raise LookupError(f"no latency row named {name!r} in this run")


# -- the driving side ----------------------------------------------------------------


@contextmanager
def serving(name: str, config: dict[str, Any], fifo: Path) -> Iterator[int]:
    """gunicorn serving contestant ``name`` with 4 workers until the block ends; its port."""
    from tests.processes._servers import running_gunicorn

    env = {
        **os.environ,
        "PYTHONPATH": os.pathsep.join([str(ROOT / "src"), str(ROOT)]),
        _CONFIG: json.dumps({**config, "contestant": name}),
        _READY: str(fifo),
    }
    # O_RDWR: this end counts as a writer too, so the FIFO never reads as
    # closed before the workers open it (a read-only end would see EOF).
    fd = os.open(fifo, os.O_RDWR | os.O_NONBLOCK)
    try:
        with running_gunicorn(
            "benchmarks._served:app()", cwd=ROOT, env=env, workers=WORKERS,
            extra_args=["--worker-class", "sync", "--timeout", "120"],
        ) as port:  # fmt: skip
            _wait_ready(fd, name, deadline=time.monotonic() + 120)
            yield port
    finally:
        os.close(fd)


def _wait_ready(fd: int, name: str, deadline: float) -> None:
    seen = b""
    while len(seen) < WORKERS:
        left = deadline - time.monotonic()
        if left <= 0:
            raise TimeoutError(f"{name}: {len(seen)} of {WORKERS} gunicorn workers ready")
        if select.select([fd], [], [], left)[0]:
            seen += os.read(fd, WORKERS)
        if _FAILED in seen:
            raise RuntimeError(f"{name}: a gunicorn worker could not build it (its error above)")


def client(
    port: int, session: bool, warmup: int, requests: int, seconds: float, start: Any, out: Any
) -> None:
    """One client process: one connection, one session cookie (``session``: the served
    app must give one), bounded in count and time."""
    conn = http.client.HTTPConnection("127.0.0.1", port, timeout=30)
    cookie = ""

    def get() -> bool:
        nonlocal cookie
        try:
            conn.request("GET", "/", headers={"Cookie": cookie} if cookie else {})
            response = conn.getresponse()
            response.read()
        except (OSError, http.client.HTTPException):
            conn.close()  # the next request opens a new connection
            return False
        set_cookie = response.getheader("Set-Cookie")
        if set_cookie:
            cookie = set_cookie.split(";", 1)[0]
        return response.status == 200

    try:
        for _ in range(warmup):
            get()
        if session and not cookie:  # each request would make a session: not this table
            raise RuntimeError("no session cookie after the warmup")
        start.wait(120)
        latencies: list[float] = []
        errors = 0
        began = time.monotonic()
        stop = began + seconds
        for _ in range(requests):
            sent = time.perf_counter()
            if get():
                latencies.append(time.perf_counter() - sent)
            else:
                errors += 1
            if time.monotonic() >= stop:
                break
        out.put({"latencies": latencies, "errors": errors, "began": began,
                 "ended": time.monotonic()})  # fmt: skip
    except BaseException as exc:  # reported, so the parent never waits forever
        out.put({"error": repr(exc)})
    finally:
        conn.close()


def drive(
    port: int, session: bool, clients: int, warmup: int, requests: int, seconds: float
) -> dict[str, Any]:
    """``clients`` client processes at once against ``port``: every latency, errors, span."""
    results = together(
        client, [(port, session, warmup, requests, seconds)] * clients, timeout=seconds + 240
    )
    return {
        "latencies": sorted(x for r in results for x in r["latencies"]),
        "errors": sum(r["errors"] for r in results),
        "span": max(r["ended"] for r in results) - min(r["began"] for r in results),
    }


def run_throughput(
    servers: Any, django: Any, names: Iterable[str], *, clients: int, warmup: int,
    requests: int, seconds: float,
) -> list[ServedResult]:  # fmt: skip
    """The bare app, then each of ``names`` that this run has, served and driven in turn.

    ``django``: the run's DjangoPeer (its tables migrated) or None (not installed).
    """
    from benchmarks._latency import groups

    with ExitStack() as stack:  # the builders only: nothing is built here
        have = {n for g in groups(servers, stack, django) for n in g.variants}
    config = {"tmp": servers.tmp, "redis_url": servers.redis_url, "pg_url": servers.pg_url}
    fifo = Path(servers.tmp) / "served-ready"
    if not fifo.exists():
        os.mkfifo(fifo)
    results: list[ServedResult] = []
    bare_rps = 0.0
    for name in [BARE, *(n for n in names if n in have)]:
        try:
            with serving(name, config, fifo) as port:
                run = drive(port, name != BARE, clients, warmup, requests, seconds)
        except Exception as exc:  # a contestant that cannot be served here: say so, go on
            print(f"  ({name}: {type(exc).__name__}: {exc}; skipped)", flush=True)
            continue
        lat = run["latencies"]
        rps = len(lat) / run["span"] if lat and run["span"] > 0 else 0.0
        bare_rps = rps if name == BARE else bare_rps
        tail = p99(lat)
        results.append(ServedResult(
            name, clients, len(lat), run["errors"], run["span"], rps,
            statistics.median(lat) * 1e3 if lat else 0.0, tail * 1e3,
            rps / bare_rps if bare_rps else 0.0,
        ))  # fmt: skip
        print(f"  {name:<30} {rps:8.0f} req/s  p50 {results[-1].p50_ms:6.2f} ms  "
              f"p99 {tail * 1e3:6.2f} ms  errors {run['errors']}", flush=True)  # fmt: skip
    return results


def print_throughput(rows: Iterable[dict[str, Any]]) -> None:
    print(f"  {'contestant':<30}{'req/s':>9}{'x bare':>8}{'p50 ms':>9}{'p99 ms':>9}"
          f"{'requests':>10}{'errors':>8}")  # fmt: skip
    for r in rows:
        print(f"  {r['contestant']:<30}{r['rps']:>9.0f}{r['ratio']:>7.2f}x{r['p50_ms']:>9.2f}"
              f"{r['p99_ms']:>9.2f}{r['requests']:>10}{r['errors']:>8}")  # fmt: skip
