"""A listening node for the cluster process tests: ``python -m tests.cluster._node URL APP NODE``.

It opens its own manager (``events=True``) with two listeners: one prints
every event it hears as a JSON line on stdout, the other is the Web-SIG
example (delete the files named in ``session["files"]`` when a session ends,
also by expiry on another node). It prints ``{"ready": node}`` once its
listener thread is connected, and exits when stdin closes (or after
``DEADLINE`` seconds, so a lost test never leaves it behind).

``python -m tests.cluster._node URL APP NODE broken`` first adds a listener
that raises on every event, and prints each ``shoal.cluster`` log record as a
``{"logged": message}`` line: the listeners after it must still run.
"""

from __future__ import annotations

import json
import logging
import os
import sys
import threading
from collections.abc import Callable

from shoal import SessionManager
from shoal.cluster import Event

DEADLINE = 120.0


class _Say(logging.Handler):
    """Each log record as a ``{"logged": message}`` line, through ``say``."""

    def __init__(self, say: Callable[[dict[str, object]], None]) -> None:
        super().__init__(logging.ERROR)
        self._say = say

    def emit(self, record: logging.LogRecord) -> None:
        self._say({"logged": record.getMessage()})


def main(url: str, app_id: str, node_id: str, mode: str = "") -> None:
    manager = SessionManager(url, app_id=app_id, node_id=node_id, events=True)
    out = threading.Lock()

    def say(data: dict[str, object]) -> None:
        with out:
            sys.stdout.write(json.dumps(data) + "\n")
            sys.stdout.flush()

    if mode == "broken":
        logging.getLogger("shoal.cluster").addHandler(_Say(say))

        def broken(event: Event) -> None:
            raise ValueError(f"a bug in a listener, on {event.event}")

        manager.add_listener(broken)

    def heard(event: Event) -> None:
        say({"heard": event.as_dict(), "local": event.local})

    def delete_files(event: Event) -> None:
        for name in (event.values or {}).get("files", []):
            try:
                os.remove(name)
            except FileNotFoundError:
                pass
            say({"deleted": name, "by": event.event})

    manager.add_listener(heard)
    manager.add_listener(delete_files, ["invalidated", "expired"], values=True)
    say({"ready": node_id})
    done = threading.Event()

    def until_stdin_closes() -> None:
        sys.stdin.read()
        done.set()

    threading.Thread(target=until_stdin_closes, daemon=True).start()
    done.wait(DEADLINE)
    manager.close()


if __name__ == "__main__":
    main(*sys.argv[1:5])
