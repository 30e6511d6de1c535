"""``shoal demo``: one session served by several processes, no sticky routing.

By default it starts ``--nodes`` app processes and a round-robin front on
``127.0.0.1:--port`` (``_front``), prints the URL and opens the page
(``_cluster_app``, ``_demo_page``) until Ctrl-C or SIGTERM, which stop every
process it started.

``shoal demo --script`` starts as many worker processes serving the JSON demo
app (``_demo_app``), then plays a browser behind a load balancer that is
*not* sticky: every request goes to the next worker in turn. It logs in,
fills a cart, sends a burst of concurrent requests that each write their own
key, reads everything back, logs out and replays the old cookies. A table
shows which process answered each request and what the session held; the
command ends on its own and stops the processes it started.
"""

from __future__ import annotations

import contextlib
import itertools
import multiprocessing
import shlex
import signal
import threading
import time
import urllib.error
import urllib.request
import webbrowser
from collections.abc import Iterator, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from multiprocessing.connection import Connection
from multiprocessing.process import BaseProcess
from socketserver import ThreadingMixIn
from typing import Any
from urllib.parse import urlsplit
from wsgiref.simple_server import WSGIRequestHandler, WSGIServer, make_server

import click
import orjson
from rich.text import Text

from ..cookies import CookieOptions
from ..ids import hash_id
from ..manager import SessionManager
from ..stores import open_store
from ..stores.base import RecordKey
from ._common import (
    BadInput,
    CliError,
    Settings,
    emit_json,
    json_option,
    new_console,
    new_table,
    plural,
    store_options,
)
from ._demo_app import build_app
from ._front import Cluster, FrontServer

__all__ = ["demo"]

HOST = "127.0.0.1"
COOKIE = CookieOptions().name  # the demo app uses the default cookie
START_TIMEOUT = 30.0  # seconds for a worker process to start serving
REQUEST_TIMEOUT = 10.0
BURST = 6  # concurrent requests, each counting its own key
CART = ("apple", "pear", "plum")


# -- the worker processes ---------------------------------------------------------


class _ThreadingServer(ThreadingMixIn, WSGIServer):
    daemon_threads = True


class _QuietHandler(WSGIRequestHandler):
    def log_message(self, format: str, *args: Any) -> None:
        pass  # the demo prints its own table of requests


def _serve_worker(store_url: str, app_id: str, conn: Connection) -> None:
    """A worker process: serve on a free port, tell the parent which, serve until stopped."""
    # Ctrl-C reaches the whole process group; the parent handles it and stops us.
    # (Usually inherited already, see ``_children_ignore_ctrl_c``.)
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    try:
        app = build_app(SessionManager(store_url, app_id=app_id))
        server = make_server(
            HOST, 0, app, server_class=_ThreadingServer, handler_class=_QuietHandler
        )
    except Exception as exc:  # reported by the parent as one line
        conn.send(("failed", f"{type(exc).__name__}: {exc}"))
        return
    conn.send(("ready", server.server_port))
    # If the parent dies without stopping us, its end of the pipe closes: stop too.
    threading.Thread(target=_stop_on_eof, args=(conn, server), daemon=True).start()
    server.serve_forever()


def _stop_on_eof(conn: Connection, server: WSGIServer) -> None:
    try:
        conn.recv()
    except EOFError:
        pass
    server.shutdown()


@contextlib.contextmanager
def _children_ignore_ctrl_c() -> Iterator[None]:
    """Processes started inside inherit an ignored SIGINT from their first instruction.

    Otherwise a Ctrl-C while a worker is still importing prints its traceback;
    ignoring it only from the worker's own code leaves that window open.
    """
    if threading.current_thread() is not threading.main_thread():
        yield  # only the main thread may set handlers; the worker ignores it itself
        return
    previous = signal.signal(signal.SIGINT, signal.SIG_IGN)
    try:
        yield
    finally:
        signal.signal(signal.SIGINT, signal.SIG_DFL if previous is None else previous)


@dataclass(slots=True)
class Worker:
    process: BaseProcess
    conn: Connection
    port: int = 0


def start_workers(store_url: str, app_id: str, count: int) -> list[Worker]:
    """``count`` spawned processes serving the demo app; stopped again on failure."""
    context = multiprocessing.get_context("spawn")
    workers: list[Worker] = []
    try:
        for _ in range(count):
            parent, child = context.Pipe()
            process = context.Process(
                target=_serve_worker, args=(store_url, app_id, child), daemon=True
            )
            with _children_ignore_ctrl_c():
                process.start()
            child.close()
            workers.append(Worker(process, parent))
        for worker in workers:
            name = f"demo worker {worker.process.pid}"
            if not worker.conn.poll(START_TIMEOUT):
                raise CliError(f"{name} did not start within {START_TIMEOUT:g}s")
            try:
                kind, value = worker.conn.recv()
            except EOFError:
                raise CliError(f"{name} exited before serving") from None
            if kind != "ready":
                raise CliError(f"{name} failed: {value}")
            worker.port = value
    except BaseException:
        stop_workers(workers)
        raise
    return workers


def stop_workers(workers: Sequence[Worker]) -> None:
    """Stop the processes we started, by PID: SIGTERM, then SIGKILL if one lingers."""
    for worker in workers:
        worker.conn.close()
        if worker.process.is_alive():
            worker.process.terminate()
    for worker in workers:
        worker.process.join(timeout=5)
        if worker.process.is_alive():
            worker.process.kill()
            worker.process.join(timeout=5)


# -- the client -------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class Answer:
    """One request as the table shows it."""

    step: str
    port: int
    pid: int
    session: str  # hash prefix of the id the browser holds afterwards, never the id
    holds: dict[str, Any]
    new: bool


_opener = urllib.request.build_opener(urllib.request.ProxyHandler({}))  # never via a proxy


def send(
    port: int, method: str, path: str, cookie: str | None
) -> tuple[dict[str, Any], str | None]:
    """One HTTP request; its JSON answer and the cookie it set (``""``: cleared)."""
    request = urllib.request.Request(
        f"http://{HOST}:{port}{path}", method=method, data=b"" if method == "POST" else None
    )
    if cookie:
        request.add_header("Cookie", f"{COOKIE}={cookie}")
    try:
        with _opener.open(request, timeout=REQUEST_TIMEOUT) as response:
            body: dict[str, Any] = orjson.loads(response.read())
            set_cookies = response.headers.get_all("Set-Cookie") or []
    except urllib.error.HTTPError as exc:
        detail = exc.read().decode("utf-8", "replace")
        raise CliError(f"{method} {path} on port {port}: {exc.code} {detail}") from None
    except (OSError, orjson.JSONDecodeError) as exc:
        raise CliError(f"{method} {path} on port {port}: {exc}") from None
    new_cookie = None
    for header in set_cookies:
        name, _, rest = header.partition("=")
        if name.strip() == COOKIE:
            new_cookie = rest.split(";", 1)[0]
    return body, new_cookie


class Browser:
    """A browser behind a non-sticky load balancer: each request goes to the next worker."""

    def __init__(self, ports: list[int]) -> None:
        self.ports = ports
        self.cookie: str | None = None
        self.answers: list[Answer] = []
        self.burst_rows = (0, 0)  # first and last row number of the last burst
        self._turn = itertools.count()

    def next_port(self) -> int:
        return self.ports[next(self._turn) % len(self.ports)]

    def request(self, step: str, method: str, path: str, *, replay: str | None = None) -> Answer:
        """Send with the browser's cookie, or ``replay`` an old one (kept out of the jar)."""
        port = self.next_port()
        cookie = self.cookie if replay is None else replay
        body, set_cookie = send(port, method, path, cookie)
        if set_cookie is not None:
            cookie = set_cookie or None
            if replay is None:
                self.cookie = cookie
        return self._record(step, port, body, cookie)

    def burst(self, steps: Sequence[tuple[str, str, str]]) -> None:
        """Send ``steps`` all at once, one thread each, all with the current cookie."""
        ports = [self.next_port() for _ in steps]
        self.burst_rows = (len(self.answers) + 1, len(self.answers) + len(steps))
        start = threading.Barrier(len(steps), timeout=REQUEST_TIMEOUT)

        def one(index: int) -> tuple[dict[str, Any], str | None]:
            start.wait()  # line the requests up so they really overlap
            _, method, path = steps[index]
            return send(ports[index], method, path, self.cookie)

        with ThreadPoolExecutor(max_workers=len(steps)) as pool:
            results = list(pool.map(one, range(len(steps))))
        for (step, _, _), port, (body, _) in zip(steps, ports, results):
            self._record(step, port, body, self.cookie)

    def _record(self, step: str, port: int, body: dict[str, Any], cookie: str | None) -> Answer:
        ref = hash_id(cookie)[:8] if cookie else "-"
        answer = Answer(step, port, int(body["pid"]), ref, dict(body["session"]), body["new"])
        self.answers.append(answer)
        return answer


# -- the scenario -----------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class Outcome:
    answers: list[Answer]
    workers_seen: int  # distinct processes that served the logged-in session
    writes_lost: int
    old_ids_refused: bool
    burst_rows: tuple[int, int]
    workers: int  # how many were started

    @property
    def carried(self) -> bool:
        return self.workers_seen == self.workers and self.writes_lost == 0

    @property
    def ok(self) -> bool:
        return self.carried and self.old_ids_refused


def play(ports: list[int]) -> Outcome:
    """The browser's visit; every step is one bounded HTTP request."""
    browser = Browser(ports)
    browser.request(f"add {CART[0]}", "POST", f"/cart?item={CART[0]}")
    before_login = browser.cookie
    browser.request("log in as alice", "POST", "/login?user=alice")
    for item in CART[1:]:
        browser.request(f"add {item}", "POST", f"/cart?item={item}")
    counters = [f"clicks_{n}" for n in range(1, BURST + 1)]
    browser.burst([(f"+1 {key}", "POST", f"/count?key={key}") for key in counters])
    final = browser.request("read back", "GET", "/")
    served = {answer.pid for answer in browser.answers}

    replay_login = browser.request("replay pre-login cookie", "GET", "/", replay=before_login)
    logged_in = browser.cookie
    browser.request("log out", "POST", "/logout")
    replay_logout = browser.request(
        "replay logout cookie, add apple", "POST", "/cart?item=apple", replay=logged_in
    )

    expected: dict[str, Any] = {"user": "alice", **{key: 1 for key in counters}}
    lost = sum(final.holds.get(key) != value for key, value in expected.items())
    lost += sum(item not in final.holds.get("cart", []) for item in CART)
    refused = replay_login.new and replay_logout.new and "user" not in replay_logout.holds
    return Outcome(
        browser.answers, len(served), lost, refused, browser.burst_rows, workers=len(ports)
    )


# -- the command ------------------------------------------------------------------


def _check_store(store_url: str, app_id: str, processes: int) -> str:
    """The masked store URL, after one read proves the store can be reached."""
    if processes > 1 and urlsplit(store_url).scheme == "memory":
        raise BadInput(
            "memory:// lives inside one process and the demo runs several: "
            "use the embedded default, or --store sqlite:///path/to/demo.db"
        )
    store = open_store(store_url)
    try:
        store.load(RecordKey(app_id, "0" * 64), now=time.time())  # one cheap read
        return store.url
    finally:
        store.close()


class _Stopped(Exception):
    """SIGTERM, raised in the main thread like Ctrl-C's KeyboardInterrupt."""


def _raise_stopped(signum: int, frame: object) -> None:
    raise _Stopped


def _open_browser(url: str) -> None:
    """Best effort: a machine without a browser still runs the demo."""
    try:
        webbrowser.open(url)
    except Exception:  # webbrowser raises its own Error, or OSError from a launcher
        pass


def _run_cluster(
    store_url: str, app_id: str, nodes: int, port: int, *, browser: bool
) -> None:
    """The nodes and the front, until Ctrl-C or SIGTERM; then every child is stopped."""
    url = _check_store(store_url, app_id, processes=nodes)
    cluster = Cluster(store_url, app_id, nodes)
    previous = signal.signal(signal.SIGTERM, _raise_stopped)
    front: FrontServer | None = None
    try:
        try:  # the port first: a busy one is reported before any node starts
            front = FrontServer(port, cluster)
        except OSError as exc:
            reason = exc.strerror or exc
            raise CliError(
                f"cannot listen on {HOST}:{port}: {reason}; pass another --port "
                "(0: any free port)"
            ) from None
        cluster.start_all()
        threading.Thread(target=front.serve_forever, daemon=True).start()
        base = f"http://{HOST}:{front.server_address[1]}/"
        console = new_console()
        console.print(
            f"shoal demo: {base} ({plural(nodes, 'node')}, store {url}, app {app_id}); "
            "Ctrl-C stops",
            soft_wrap=True,
        )
        console.print(
            "  each request goes to the next node; the session lives in the store, so any "
            "node serves it",
            soft_wrap=True,
        )
        if browser:
            _open_browser(base)
        while True:  # the front serves in its thread; this one waits for a signal
            time.sleep(3600)
    except (KeyboardInterrupt, _Stopped):
        new_console().print("stopped")
    finally:
        if front is not None:
            front.shutdown()
            front.server_close()
        cluster.stop_all()
        signal.signal(signal.SIGTERM, previous)


@click.command("demo")
@store_options
@click.option("--nodes", "--workers", "nodes", default=3, show_default=True,
              type=click.IntRange(2, 16), help="App processes sharing the store.")
@click.option("--port", default=8000, show_default=True, type=click.IntRange(0, 65535),
              help="Port of the round-robin front on 127.0.0.1 (0: any free port).")
@click.option("--no-browser", is_flag=True, help="Do not open a browser.")
@click.option("--script", is_flag=True,
              help="Play one scripted visit, print a table and exit instead.")
@click.option("--serve", is_flag=True, hidden=True)  # the default now; kept for old scripts
@json_option
@click.pass_obj
def demo(
    settings: Settings, nodes: int, port: int, no_browser: bool, script: bool, serve: bool,
    as_json: bool,
) -> None:
    """A live cluster in the browser: NODES processes behind a non-sticky front.

    Serves on http://127.0.0.1:PORT/ until Ctrl-C, on the embedded SQLite
    store (or --store), with sessions under app id "demo" unless --app-id is
    given. With --script it plays one visit instead, prints what each
    process saw, and ends by itself.
    """
    app_id = settings.app_id or "demo"
    if as_json and not script:
        raise BadInput("--json goes with --script: the live demo prints no report")
    if not script:
        _run_cluster(settings.store_url, app_id, nodes, port, browser=not no_browser)
        return
    workers = nodes
    url = _check_store(settings.store_url, app_id, processes=workers)
    started = start_workers(settings.store_url, app_id, workers)
    try:
        outcome = play([worker.port for worker in started])
    finally:
        stop_workers(started)
    inspect = f"shoal ls --all --store {shlex.quote(url)}"
    if as_json:
        emit_json({
            "store": url,
            "app_id": app_id,
            "workers": [{"pid": w.process.pid, "port": w.port} for w in started],
            "requests": outcome.answers,
            "carried_across": outcome.workers_seen,
            "writes_lost": outcome.writes_lost,
            "old_ids_refused": outcome.old_ids_refused,
            "ok": outcome.ok,
        })
    else:
        _print_report(outcome, started, url, inspect)
    if not outcome.ok:
        raise CliError("the demo's checks failed (see above)")


def _verdict(ok: bool) -> Text:
    return Text("ok    ", "green") if ok else Text("FAILED", "bold red")


def _print_report(outcome: Outcome, workers: Sequence[Worker], url: str, inspect: str) -> None:
    console = new_console()
    console.print(f"shoal demo on {url}")
    for number, worker in enumerate(workers, 1):
        console.print(f"  worker {number}: pid {worker.process.pid} on {HOST}:{worker.port}")
    table = new_table()
    table.add_column("#", justify="right")
    table.add_column("step")
    table.add_column("pid", no_wrap=True)
    table.add_column("session", no_wrap=True)
    for name in ("user", "cart", "clicks"):
        table.add_column(name, no_wrap=True)
    for number, answer in enumerate(outcome.answers, 1):
        holds = answer.holds
        clicks = sorted(key.removeprefix("clicks_") for key in holds if key.startswith("clicks_"))
        table.add_row(
            str(number),
            answer.step,
            str(answer.pid),
            answer.session + (" new" if answer.new else ""),
            holds.get("user", ""),
            " ".join(holds.get("cart", [])),
            " ".join(clicks),
        )
    console.print(table)
    first, last = outcome.burst_rows
    console.print(f"requests {first}-{last} were sent at once, each adding 1 to its own key")
    console.print(
        _verdict(outcome.carried),
        f"session carried across {plural(outcome.workers_seen, 'worker')}, "
        f"{plural(outcome.writes_lost, 'write')} lost ({plural(len(CART), 'cart add')}, "
        f"{plural(BURST, 'concurrent counter')})",
        soft_wrap=True,
    )
    if outcome.old_ids_refused:
        console.print(_verdict(True), "the pre-login and the logged-out cookies were refused")
    else:
        console.print(_verdict(False), "an old cookie still opened the session")
    console.print(f"\ninspect what it stored:  {inspect}", soft_wrap=True)
