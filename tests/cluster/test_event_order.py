"""Events leave a process in the order of their sequence numbers.

A receiver counts a sender's skipped numbers as missed events (and clears its
near cache). If two threads of one sender could publish out of the order in
which they took their numbers, every receiver would report events as missed
that arrive a moment later: ``shoal demo``'s concurrency panel did, a dozen
warnings per run. Real SQLite channel, real threads; no clock involved.
"""

from __future__ import annotations

import threading
from pathlib import Path

from shoal import SessionManager
from shoal.cluster import Event
from shoal.ids import hash_id

THREADS = 8
EACH = 40
WAIT = 60.0  # seconds, an upper bound only: the test waits on an event


def test_concurrent_sends_are_never_reported_missed(tmp_path: Path) -> None:
    url = f"sqlite:///{tmp_path}/events.db"
    receiver = SessionManager(url, app_id="order", node_id="receiver", events=True)
    sender = SessionManager(url, app_id="order", node_id="sender", events=True)
    heard: list[Event] = []
    all_heard = threading.Event()

    def listener(event: Event) -> None:
        heard.append(event)  # the listener thread is the only writer
        if len(heard) == THREADS * EACH:
            all_heard.set()

    receiver.add_listener(listener)
    start = threading.Barrier(THREADS, timeout=WAIT)

    def send(thread: int) -> None:
        start.wait()  # line the senders up so their publishes really overlap
        for n in range(EACH):
            sender.events.emit("created", hash_id(f"thread-{thread}-session-{n}"))

    threads = [threading.Thread(target=send, args=(t,)) for t in range(THREADS)]
    try:
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join(WAIT)
        assert all_heard.wait(WAIT), f"heard {len(heard)} of {THREADS * EACH} events"
        assert (receiver.events.received, receiver.events.missed) == (THREADS * EACH, 0)
    finally:
        sender.close()
        receiver.close()
