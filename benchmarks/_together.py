"""Client processes started together: what the throughput and contention parts share.

Each client is a ``spawn`` process (a fresh interpreter: no connection or
lock of this process crosses into it, as a fork would carry them) that gets
its own arguments, then a common ``Barrier`` and a result ``Queue``; it
waits on the barrier once connected, so the clock starts with every client
ready, and puts one dict on the queue: its numbers, or ``{"error": ...}``
(so the parent never waits forever). The parent waits at most ``timeout``
seconds for each result, and kills a client that outlives its join.
"""

from __future__ import annotations

import multiprocessing
from collections.abc import Callable, Sequence
from typing import Any

__all__ = ["p99", "together"]

_SPAWN = multiprocessing.get_context("spawn")


def together(
    target: Callable[..., None], args: Sequence[tuple[Any, ...]], *, timeout: float
) -> list[dict[str, Any]]:
    """One process per tuple of ``args``, ``target(*args, barrier, queue)``; their results.

    Raises ``RuntimeError`` with every client's error if any reported one.
    """
    start = _SPAWN.Barrier(len(args))
    out = _SPAWN.Queue()
    procs = [_SPAWN.Process(target=target, args=(*a, start, out)) for a in args]
    for proc in procs:
        proc.start()
    try:
        results: list[dict[str, Any]] = [out.get(timeout=timeout) for _ in procs]
    finally:
        for proc in procs:
            proc.join(30)
            if proc.is_alive():
                proc.kill()
    errors = [r["error"] for r in results if "error" in r]
    if errors:
        raise RuntimeError("; ".join(errors))
    return results


def p99(ordered: Sequence[float]) -> float:
    """The 99th percentile of sorted ``ordered`` (nearest rank; 0 when empty)."""
    return ordered[min(len(ordered) - 1, int(len(ordered) * 0.99))] if ordered else 0.0
