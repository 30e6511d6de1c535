"""One node of ``shoal demo``: ``python -m shoal.cli._cluster_node``, started by the demo.

Its configuration comes from the environment the demo sets (this is the
edge): ``SHOAL_STORE``, ``SHOAL_SECRET_KEYS`` (the run's replica key, the
same for every node), ``SHOAL_DEMO_NODE_ID``, ``SHOAL_DEMO_APP_ID`` and
``SHOAL_DEMO_NODES`` (every node's id, for the page). It serves on a free
loopback port, writes ``ready PORT`` on stdout, and serves until its stdin
closes (the demo stopped it, or died) or it gets SIGTERM.
"""

from __future__ import annotations

import os
import sys
import threading
from socketserver import ThreadingMixIn
from typing import Any
from wsgiref.simple_server import WSGIRequestHandler, WSGIServer, make_server

from ..config import secret_keys_from_env
from ._cluster_app import NodeApp

HOST = "127.0.0.1"


class ThreadingWSGIServer(ThreadingMixIn, WSGIServer):
    daemon_threads = True
    request_queue_size = 128  # the race sends 50 requests at once


class QuietHandler(WSGIRequestHandler):
    def log_message(self, format: str, *args: Any) -> None:
        pass  # the page shows who served what


def _stop_on_eof(server: WSGIServer) -> None:
    sys.stdin.buffer.read()  # returns at EOF: the demo closed our stdin, or died
    server.shutdown()


def main() -> int:
    node_id = os.environ.get("SHOAL_DEMO_NODE_ID", "node-1")
    try:
        app = NodeApp(
            os.environ["SHOAL_STORE"],
            app_id=os.environ.get("SHOAL_DEMO_APP_ID", "demo"),
            node_id=node_id,
            secret_keys=secret_keys_from_env(),
            nodes=os.environ.get("SHOAL_DEMO_NODES", node_id).split(","),
        )
        server = make_server(
            HOST, 0, app, server_class=ThreadingWSGIServer, handler_class=QuietHandler
        )
    except Exception as exc:  # the demo reports it as one line
        print(f"failed {type(exc).__name__}: {exc}", flush=True)
        return 1
    print(f"ready {server.server_port}", flush=True)
    threading.Thread(target=_stop_on_eof, args=(server,), daemon=True).start()
    try:
        server.serve_forever()
    finally:
        server.server_close()
        app.close()
    return 0


if __name__ == "__main__":
    sys.exit(main())
