"""Start listening nodes (``_node.py``) as OS processes and read what they hear.

Every wait is bounded in time; each node is stopped by closing its stdin and
then by its pid, never by name.
"""

from __future__ import annotations

import json
import os
import queue
import subprocess
import sys
import threading
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[2]
WAIT = 30.0


class Node:
    """One listening process; ``lines`` collects its JSON lines as they come."""

    def __init__(
        self, url: str, app_id: str, node_id: str, module: str = "tests.cluster._node",
        *args: str,
    ) -> None:  # fmt: skip
        self.node_id = node_id
        env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(ROOT / "src"), str(ROOT)])}
        self.proc = subprocess.Popen(
            [sys.executable, "-m", module, url, app_id, node_id, *args],
            stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True, env=env, cwd=ROOT,
        )  # fmt: skip
        self.lines: list[dict[str, Any]] = []
        self._new: queue.Queue[dict[str, Any]] = queue.Queue()
        self._reader = threading.Thread(target=self._read, daemon=True)
        self._reader.start()

    def _read(self) -> None:
        assert self.proc.stdout is not None
        for line in self.proc.stdout:
            data = json.loads(line)
            self.lines.append(data)
            self._new.put(data)

    def wait_for(self, match: Callable[[dict[str, Any]], bool], timeout: float = WAIT) -> None:
        """Until a line matching ``match`` has come (``AssertionError`` after ``timeout``)."""
        deadline = time.monotonic() + timeout
        if any(match(line) for line in list(self.lines)):
            return
        while (left := deadline - time.monotonic()) > 0:
            try:
                if match(self._new.get(timeout=left)):
                    return
            except queue.Empty:
                break
        raise AssertionError(f"node {self.node_id} never saw it; it saw {self.lines}")

    def send(self, command: dict[str, Any]) -> None:
        """One JSON command on the node's stdin (``_cache_node.py``)."""
        assert self.proc.stdin is not None
        self.proc.stdin.write(json.dumps(command) + "\n")
        self.proc.stdin.flush()

    def ask(self, command: dict[str, Any], key: str, timeout: float = WAIT) -> dict[str, Any]:
        """Send ``command`` and return the next line that has ``key`` (the answer)."""
        def answers() -> list[dict[str, Any]]:
            return [line for line in list(self.lines) if key in line]

        before = len(answers())
        self.send(command)
        self.wait_for(lambda _line: len(answers()) > before, timeout)
        return answers()[before]

    def heard(self, event: str, ref: str | None = None) -> list[dict[str, Any]]:
        return [
            line["heard"] for line in list(self.lines)
            if "heard" in line and line["heard"]["event"] == event
            and (ref is None or line["heard"]["ref"] == ref)
        ]  # fmt: skip

    def stop(self) -> None:
        if self.proc.stdin is not None:
            self.proc.stdin.close()
        try:
            self.proc.wait(10)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait(10)
        self._reader.join(10)
        if self.proc.stdout is not None:
            self.proc.stdout.close()


@contextmanager
def listening_nodes(
    url: str, app_id: str, names: list[str], module: str = "tests.cluster._node",
    *args: str,
) -> Iterator[list[Node]]:  # fmt: skip
    """Start a node per name (``args`` go to each after its node id); wait until all listen."""
    nodes = [Node(url, app_id, name, module, *args) for name in names]
    try:
        for node in nodes:
            name = node.node_id

            def ready(line: dict[str, Any], name: str = name) -> bool:
                return line.get("ready") == name

            node.wait_for(ready)
        yield nodes
    finally:
        for node in nodes:
            node.stop()
