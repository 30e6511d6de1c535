"""What the latency benchmarks share: the session, interleaved timing, the ratio table.

Every benchmark here times one request (load a session of about 500 bytes,
change one key, save it) of several variants beside the raw store floor in
the same run, and prints the ratio of medians to that floor together with
what each request sent to the store (round trips or statements, counted by
hooks that add to ``Counter.count``).
"""

from __future__ import annotations

import random
import statistics
import time
from collections.abc import Callable, Iterable
from dataclasses import dataclass

__all__ = ["PAYLOAD", "SESSION", "Counter", "Request", "Row", "interleave", "print_table"]

SESSION = {
    "user": {"id": 4711, "name": "Ada Lovelace", "email": "ada@example.org", "roles": ["admin"]},
    "cart": [{"sku": f"SKU-{i:05d}", "qty": i % 3 + 1, "price": "19.90"} for i in range(5)],
    "csrf": "x" * 43,
    "theme": "dark",
    "visits": 0,
}
PAYLOAD = (repr(SESSION).encode() * 2)[:500]  # the floor's bytes: the same size

Request = Callable[[int], None]


class Counter:
    """What requests sent to the store (round trips or statements), by the hooks installed.

    Counting is off while requests are timed: some hooks cost time (SQLite's
    trace callback expands every statement with its bound blobs). A hook
    counts only while ``on``; one that must be installed and removed instead
    registers a switch.
    """

    count = 0
    on = False
    switches: list[Callable[[bool], None]] = []

    @classmethod
    def counting(cls, on: bool) -> None:
        cls.on = on
        for switch in cls.switches:
            switch(on)


@dataclass
class Row:
    variant: str
    times: list[float]
    sent: float  # round trips or statements per request

    @property
    def median(self) -> float:
        return statistics.median(self.times)

    @property
    def p90(self) -> float:
        return statistics.quantiles(self.times, n=10)[-1]


def interleave(
    variants: dict[str, Request], n: int, warmup: int, *, rounds: int = 1, label: str = ""
) -> list[Row]:
    """``n`` requests of every variant per round, interleaved: request i of each, in turn.

    Interleaving one request at a time lets every variant see the same
    machine: on a shared host a burst of load then slows all of them alike
    instead of the one that happened to be running. The order is shuffled
    for every request index (seeded, so runs are repeatable): with a fixed
    cycle each variant always ran right after the same one, and the variant
    after the FULL floor paid for its fsync (about +40 us on SQLite merge,
    measured against an interleaving without the FULL floor).
    """
    names = list(variants)
    order = random.Random(_SEED)
    rows = {name: Row(name, [], 0.0) for name in names}
    done = 0
    for round_ in range(rounds):
        for i in range(warmup):
            for name in names:
                variants[name](done + i)
        done += warmup
        mark = {name: len(rows[name].times) for name in names}
        turn = names[:]
        for i in range(n):
            order.shuffle(turn)
            for name in turn:
                started = time.perf_counter()
                variants[name](done + i)
                rows[name].times.append(time.perf_counter() - started)
        done += n
        for name in names:
            median = statistics.median(rows[name].times[mark[name] :])
            print(f"  round {round_ + 1} {label}{name:<26} median {median * 1e6:8.1f} us",
                  flush=True)
    # What each request sends: counted in a pass of its own, untimed.
    Counter.counting(True)
    try:
        for name in names:
            before = Counter.count
            for i in range(_COUNTED):
                variants[name](done + i)
            rows[name].sent = (Counter.count - before) / _COUNTED
    finally:
        Counter.counting(False)
    return list(rows.values())


_COUNTED = 50  # requests per variant in the counting pass
_SEED = 20261203  # the interleaving order's: the same order in every run


def print_table(rows: Iterable[Row], *, floor: str, sent: str, title: str = "") -> None:
    """Median, p90, the ratio to the ``floor`` row's median, and what each request sent."""
    rows = list(rows)
    base = next(row for row in rows if row.variant == floor)
    print()
    if title:
        print(title)
    print(f"{'variant':<28}{'median us':>10}{'p90 us':>9}{'x floor':>9}{sent:>13}")
    for row in rows:
        print(f"{row.variant:<28}{row.median * 1e6:>10.1f}{row.p90 * 1e6:>9.1f}"
              f"{row.median / base.median:>8.2f}x{row.sent:>13.2f}")
