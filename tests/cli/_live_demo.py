"""``shoal demo`` (the live cluster) as a subprocess, for the cluster and browser tests.

``live_demo`` starts it with ``--no-browser`` on a free port, data under the
test's tmp dir, reads the URL from its banner, and on exit stops it (SIGTERM,
then SIGKILL by PID if it lingers) and closes its pipes. Every wait is bounded.
"""

from __future__ import annotations

import http.cookiejar
import os
import queue
import re
import signal
import subprocess
import sys
import threading
import urllib.parse
import urllib.request
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import IO, Any

import orjson

from tests.processes._servers import stop

TIMEOUT = 60.0


def demo_env(tmp_path: Path) -> dict[str, str]:
    """A child ``shoal``'s environment: no store from outside, a private data dir."""
    child = {k: v for k, v in os.environ.items() if k not in ("SHOAL_STORE", "SHOAL_SECRET_KEYS")}
    child["SHOAL_DATA_DIR"] = str(tmp_path / "data")
    child["PYTHONUNBUFFERED"] = "1"
    return child


def _lines(stream: IO[str], into: queue.Queue[str]) -> None:
    for line in stream:
        into.put(line)


@dataclass
class LiveDemo:
    process: subprocess.Popen[str]
    url: str  # http://127.0.0.1:PORT/
    output: queue.Queue[str]
    banner: str
    jar: http.cookiejar.CookieJar = field(default_factory=http.cookiejar.CookieJar)

    def __post_init__(self) -> None:
        self.opener = urllib.request.build_opener(
            urllib.request.ProxyHandler({}), urllib.request.HTTPCookieProcessor(self.jar)
        )

    def request(self, method: str, path: str, **form: str) -> Any:
        """One JSON request through the front, with this client's cookie jar."""
        data = urllib.parse.urlencode(form).encode() if method == "POST" else None
        request = urllib.request.Request(
            self.url + path.lstrip("/"), data=data, method=method,
            headers={"Accept": "application/json"},
        )  # fmt: skip
        with self.opener.open(request, timeout=TIMEOUT) as response:
            return orjson.loads(response.read())

    def status(self) -> Any:
        return self.request("GET", "/_demo/status")

    def child_pids(self) -> set[int]:
        return {node["pid"] for node in self.status()["nodes"] if node["pid"]}


@contextmanager
def live_demo(tmp_path: Path, *args: str, default_store: bool = False) -> Iterator[LiveDemo]:
    """The demo on ``tmp_path/demo.db``, or with ``default_store`` on the one a user gets
    (the embedded SQLite file in the data dir, here ``tmp_path/data``)."""
    store = [] if default_store else ["--store", f"sqlite:///{tmp_path}/demo.db"]
    process = subprocess.Popen(
        [sys.executable, "-m", "shoal.cli", "demo", "--no-browser", "--port", "0",
         *store, *args],
        env=demo_env(tmp_path), stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
        # A shell may start tests with SIGINT ignored; the demo must see Ctrl-C.
        preexec_fn=lambda: signal.signal(signal.SIGINT, signal.SIG_DFL),
    )  # fmt: skip
    try:
        assert process.stdout is not None
        output: queue.Queue[str] = queue.Queue()
        threading.Thread(target=_lines, args=(process.stdout, output), daemon=True).start()
        try:
            banner = output.get(timeout=TIMEOUT)
        except queue.Empty:
            raise AssertionError(f"no banner within {TIMEOUT:g}s") from None
        found = re.search(r"http://127\.0\.0\.1:\d+/", banner)
        assert found, banner
        yield LiveDemo(process, found.group(0), output, banner)
    finally:
        stop(process, TIMEOUT)
        for stream in (process.stdout, process.stderr):
            if stream is not None:
                stream.close()
