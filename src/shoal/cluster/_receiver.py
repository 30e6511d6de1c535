"""The background listener thread every networked channel shares.

It runs ``session()`` (connect, then read events until closed or broken)
again and again: after a failure it logs, waits with a bounded backoff and
reconnects by itself. What was published while it was away is missed; the
hub counts that exactly from each sender's sequence numbers and logs it.
"""

from __future__ import annotations

import logging
import threading
from collections.abc import Callable

__all__ = ["Receiver"]

log = logging.getLogger("shoal.cluster")


class Receiver:
    """A daemon thread running ``session(stop)`` until ``stop`` is set."""

    def __init__(self, name: str, session: Callable[[threading.Event], None]) -> None:
        self.name = name
        self._session = session
        self.stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name=f"shoal-events-{name}", daemon=True)
        self._thread.start()

    def _run(self) -> None:
        delay = 0.05
        failures = 0
        while not self.stop.is_set():
            try:
                self._session(self.stop)
                delay, failures = 0.05, 0
            except Exception as exc:  # noqa: BLE001 - any failure: reconnect, loudly
                failures += 1
                if failures == 1:
                    log.warning(
                        "events channel %s lost (%s: %s); reconnecting, events sent "
                        "meanwhile will be missed", self.name, type(exc).__name__, exc,
                    )  # fmt: skip
                self.stop.wait(delay)
                delay = min(delay * 2, 2.0)

    def close(self, timeout: float = 5.0) -> None:
        self.stop.set()
        if self._thread is not threading.current_thread():
            self._thread.join(timeout)
