"""``shoal demo``'s cluster: N node processes and a dev-only round-robin front.

The front (``FrontServer``) sends each request to the next live node, passing
every header through unchanged (``Cookie`` and ``Set-Cookie`` included) but
the hop-by-hop ones. A node that is down is skipped; a node that refuses the
connection is skipped too, since the request never reached it. It is a
stand-in for nginx or HAProxy without stickiness (docs/deploy.md), not a
production proxy: one request per connection, bodies buffered, loopback only.

The front also owns what happens *to* the cluster, under ``/_demo/``:

    GET  /_demo/status              the nodes, the store's record count, the last race
    POST /_demo/nodes/ID/kill       SIGKILL one node (a crash)
    POST /_demo/nodes/ID/start      start it again, same id, new port
    POST /_demo/flush               delete every record of the demo app (store loss)
    POST /_demo/race                50 concurrent requests per policy, through the front

The nodes are ``python -m shoal.cli._cluster_node`` processes in sessions of
their own, so a Ctrl-C at the terminal reaches only the demo, which stops
them (``Cluster.stop_all``). Each node also stops when its stdin closes, so
a demo that is killed outright leaves no node behind either.
"""

from __future__ import annotations

import http.client
import itertools
import os
import re
import secrets
import select
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

import orjson

from ..cookies import CookieOptions
from ..stores import open_store
from ..stores.base import Store
from ._cluster_app import BURST, OWN_KEY, POLICIES
from ._common import CliError

__all__ = ["Cluster", "FrontServer", "Node"]

HOST = "127.0.0.1"
COOKIE = CookieOptions().name
START_TIMEOUT = 30.0  # seconds for a node to start serving
STOP_TIMEOUT = 5.0  # seconds for a node to exit before it is killed
REQUEST_TIMEOUT = 60.0  # a serialized race request may wait its turn behind 49 others
MAX_BODY = 1 << 20
HOP_BY_HOP = frozenset({
    "connection", "keep-alive", "proxy-authenticate", "proxy-authorization", "te", "trailer",
    "transfer-encoding", "upgrade", "content-length",
})  # fmt: skip


@dataclass(slots=True)
class Node:
    id: str
    process: subprocess.Popen[bytes] | None = None
    port: int = 0
    served: int = 0

    @property
    def up(self) -> bool:
        return self.process is not None and self.process.poll() is None

    @property
    def pid(self) -> int | None:
        return self.process.pid if self.process is not None else None


@dataclass
class Cluster:
    """The node processes: start, kill, restart, stop; the round-robin order."""

    store_url: str
    app_id: str
    count: int
    # The replica's key for this run only, handed to the nodes in their environment.
    secret: str = field(default_factory=lambda: secrets.token_urlsafe(32))
    nodes: list[Node] = field(init=False)
    lock: threading.Lock = field(default_factory=threading.Lock)
    _turn: Iterator[int] = field(default_factory=itertools.count)

    def __post_init__(self) -> None:
        self.nodes = [Node(f"node-{n}") for n in range(1, self.count + 1)]

    def node(self, node_id: str) -> Node | None:
        return next((n for n in self.nodes if n.id == node_id), None)

    def start_all(self) -> None:
        try:
            for node in self.nodes:
                self.start(node)
        except BaseException:
            self.stop_all()
            raise

    def start(self, node: Node) -> None:
        """Start ``node`` (again) and wait until it serves; ``CliError`` if it does not."""
        if node.up:
            return
        env = {k: v for k, v in os.environ.items() if not k.startswith("SHOAL_DEMO_")}
        env.update({
            "SHOAL_STORE": self.store_url, "SHOAL_SECRET_KEYS": self.secret,
            "SHOAL_DEMO_NODE_ID": node.id, "SHOAL_DEMO_APP_ID": self.app_id,
            "SHOAL_DEMO_NODES": ",".join(n.id for n in self.nodes),
        })  # fmt: skip
        process = subprocess.Popen(
            [sys.executable, "-m", "shoal.cli._cluster_node"],
            stdin=subprocess.PIPE, stdout=subprocess.PIPE, env=env,
            start_new_session=True,  # Ctrl-C reaches the demo only; it stops the nodes
        )  # fmt: skip
        node.process = process
        assert process.stdout is not None
        ready, _, _ = select.select([process.stdout], [], [], START_TIMEOUT)
        line = process.stdout.readline().decode("utf-8", "replace").strip() if ready else ""
        found = re.fullmatch(r"ready (\d+)", line)
        if found is None:
            self.stop(node)
            why = line.removeprefix("failed ") or f"no answer within {START_TIMEOUT:g}s"
            raise CliError(f"demo {node.id} did not start: {why}")
        node.port = int(found.group(1))

    def kill(self, node: Node) -> None:
        """A crash: SIGKILL, no goodbye. The process is reaped at once."""
        if node.process is not None and node.up:
            node.process.send_signal(signal.SIGKILL)
            node.process.wait(timeout=STOP_TIMEOUT)

    def stop(self, node: Node) -> None:
        """Close its stdin and SIGTERM it, by PID; SIGKILL if it lingers."""
        process = node.process
        if process is None:
            return
        for stream in (process.stdin, process.stdout):
            if stream is not None:
                stream.close()
        if process.poll() is None:
            process.terminate()
            try:
                process.wait(timeout=STOP_TIMEOUT)
            except subprocess.TimeoutExpired:
                process.kill()
                process.wait(timeout=STOP_TIMEOUT)

    def stop_all(self) -> None:
        for node in self.nodes:
            self.stop(node)

    def rotation(self) -> list[Node]:
        """The live nodes, starting with the next one in turn: round robin, no stickiness.

        The turn counts over the live nodes only, so they share the load evenly
        while one is down (rejected: skipping a dead node's turns, which sends
        them all to its successor).
        """
        live = [node for node in self.nodes if node.up]
        if not live:
            return []
        with self.lock:
            start = next(self._turn)
        return [live[(start + i) % len(live)] for i in range(len(live))]


class FrontServer(ThreadingHTTPServer):
    daemon_threads = True
    request_queue_size = 128  # the race opens 50 connections at once

    def __init__(self, port: int, cluster: Cluster) -> None:
        self.cluster = cluster
        self.race: dict[str, Any] | None = None
        self.race_lock = threading.Lock()
        # Opened first: a busy port makes socketserver call server_close, which closes it.
        self.store: Store = open_store(cluster.store_url)
        super().__init__((HOST, port), FrontHandler)

    def server_close(self) -> None:
        super().server_close()
        self.store.close()

    def records(self) -> int:
        """Live records of the demo app in the store."""
        now = time.time()
        return sum(
            1 for r in self.store.records(self.cluster.app_id)
            if not r.invalidated and r.expires > now
        )  # fmt: skip

    def flush(self) -> int:
        """Delete every record of the demo app, tombstones included: the store is lost."""
        keys = [r.key for r in self.store.records(self.cluster.app_id)]
        return sum(self.store.delete(key) for key in keys)

    def run_race(self) -> dict[str, Any]:
        """``BURST`` concurrent requests per policy through this front, each on a fresh session."""
        port = self.server_address[1]
        started = time.monotonic()
        results, errors = [], 0
        for policy in POLICIES:
            status, _, cookie = _send(port, "POST", f"/race/{policy}/start", None)
            if status != 200 or cookie is None:
                raise CliError(f"race {policy}: the start request answered {status}")
            barrier = threading.Barrier(BURST, timeout=REQUEST_TIMEOUT)

            def hit(n: int, policy: str = policy, cookie: str = cookie) -> int:
                try:
                    barrier.wait()  # line them up so they really overlap
                    return _send(port, "POST", f"/race/{policy}/hit?n={n}", cookie)[0]
                except (OSError, threading.BrokenBarrierError):
                    return 0

            with ThreadPoolExecutor(max_workers=BURST) as pool:
                statuses = list(pool.map(hit, range(BURST)))
            errors += sum(s != 200 for s in statuses)
            _, body, _ = _send(port, "GET", f"/race/{policy}/count", cookie)
            count = int(body.get("count", 0))
            results.append({
                "policy": policy, "count": count, "expected": BURST, "exact": count == BURST,
                "workload": "writes its own key" if policy in OWN_KEY else "count += 1",
            })  # fmt: skip
        return {"results": results, "errors": errors, "seconds": time.monotonic() - started}


def _send(port: int, method: str, path: str, cookie: str | None) -> tuple[int, Any, str | None]:
    """One request to the front: status, JSON body, and the session cookie it set."""
    conn = http.client.HTTPConnection(HOST, port, timeout=REQUEST_TIMEOUT)
    try:
        headers = {"Accept": "application/json", "Content-Length": "0"}
        if cookie:
            headers["Cookie"] = f"{COOKIE}={cookie}"
        conn.request(method, path, headers=headers)
        response = conn.getresponse()
        data = response.read()
        set_cookie = None
        for name, value in response.getheaders():
            if name.lower() == "set-cookie" and value.partition("=")[0].strip() == COOKIE:
                set_cookie = value.partition("=")[2].split(";", 1)[0] or None
        try:
            body = orjson.loads(data)
        except orjson.JSONDecodeError:
            body = {}
        return response.status, body, set_cookie
    finally:
        conn.close()


class FrontHandler(BaseHTTPRequestHandler):
    server: FrontServer
    protocol_version = "HTTP/1.0"  # one request per connection: no keep-alive to manage

    def log_message(self, format: str, *args: Any) -> None:
        pass  # the page shows which node served what

    def do_GET(self) -> None:
        self._handle()

    def do_POST(self) -> None:
        self._handle()

    def do_HEAD(self) -> None:
        self._handle()

    def _handle(self) -> None:
        if self.path.startswith("/_demo/"):
            self._control()
            return
        length = self._length()
        if not 0 <= length <= MAX_BODY:
            self._reply(413, {"error": f"the demo front takes a Content-Length of 0 to {MAX_BODY}"})
            return
        body = self.rfile.read(length) if length else b""
        for node in self.server.cluster.rotation():
            conn = http.client.HTTPConnection(HOST, node.port, timeout=REQUEST_TIMEOUT)
            try:
                try:
                    conn.connect()
                except OSError:
                    continue  # refused: the request never reached it, try the next node
                self._forward(conn, node, body)
                return
            finally:
                conn.close()
        self._reply(503, {"error": "every node is down: restart one"})

    def _length(self) -> int:
        """The declared body length; -1 (refused) when it is not a number."""
        try:
            return int(self.headers.get("Content-Length") or 0)
        except ValueError:
            return -1

    def _forward(self, conn: http.client.HTTPConnection, node: Node, body: bytes) -> None:
        try:
            conn.putrequest(self.command, self.path, skip_host=True, skip_accept_encoding=True)
            for name, value in self.headers.items():
                if name.lower() not in HOP_BY_HOP:
                    conn.putheader(name, value)
            conn.putheader("X-Forwarded-For", self.client_address[0])
            conn.putheader("Content-Length", str(len(body)))
            conn.endheaders(body)
            response = conn.getresponse()
            data = response.read()
        except OSError as exc:
            self._reply(502, {"error": f"{node.id} failed mid-request: {exc}"})
            return
        node.served += 1
        # The node's own Date and Server go through: send_response would add twice.
        self.send_response_only(response.status, response.reason)
        for name, value in response.getheaders():  # each Set-Cookie on its own, unchanged
            if name.lower() not in HOP_BY_HOP:
                self.send_header(name, value)
        self.send_header("Content-Length", str(len(data)))
        self.send_header("X-Shoal-Node", node.id)
        self.end_headers()
        if self.command != "HEAD":
            self.wfile.write(data)

    def _control(self) -> None:
        cluster = self.server.cluster
        parts = self.path.split("?", 1)[0].split("/")[2:]  # after "", "_demo"
        if self.command == "GET" and parts == ["status"]:
            self._reply(200, self._status())
            return
        if self.command != "POST":
            self._reply(404, {"error": "no such route"})
            return
        length = self._length()
        if 0 < length <= MAX_BODY:
            self.rfile.read(length)  # a form's body: the route says it all
        answer: dict[str, Any]
        if len(parts) == 3 and parts[0] == "nodes" and parts[2] in ("kill", "start"):
            node = cluster.node(parts[1])
            if node is None:
                self._reply(404, {"error": f"no node {parts[1]}"})
                return
            try:
                if parts[2] == "kill":
                    cluster.kill(node)
                else:
                    cluster.start(node)
            except CliError as exc:
                self._reply(500, {"error": str(exc)})
                return
            answer = self._status()
        elif parts == ["flush"]:
            answer = {"deleted": self.server.flush()}
        elif parts == ["race"]:
            if not self.server.race_lock.acquire(blocking=False):
                self._reply(409, {"error": "a race is running"})
                return
            try:
                answer = self.server.race = self.server.run_race()
            except CliError as exc:
                self._reply(503, {"error": str(exc)})
                return
            finally:
                self.server.race_lock.release()
        else:
            self._reply(404, {"error": "no such route"})
            return
        if "text/html" in self.headers.get("Accept", ""):  # a form without JavaScript
            self.send_response(303)
            self.send_header("Location", "/")
            self.send_header("Content-Length", "0")
            self.end_headers()
            return
        self._reply(200, answer)

    def _status(self) -> dict[str, Any]:
        cluster = self.server.cluster
        return {
            "nodes": [
                {"id": n.id, "up": n.up, "pid": n.pid, "port": n.port, "served": n.served}
                for n in cluster.nodes
            ],
            "records": self.server.records(),
            "race": self.server.race,
        }

    def _reply(self, status: int, value: Any) -> None:
        data = orjson.dumps(value)
        self.send_response(status)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(data)))
        self.send_header("Cache-Control", "no-store")
        self.end_headers()
        if self.command != "HEAD":
            self.wfile.write(data)
