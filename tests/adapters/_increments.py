"""Concurrent clients incrementing one session's counter on a real multi-worker server."""

from __future__ import annotations

from concurrent.futures import ThreadPoolExecutor
from typing import Any

import orjson

from ..processes._servers import get


def count(port: int, cookie: str | None) -> tuple[dict[str, Any], str | None]:
    """One ``GET /`` of a counting app: its JSON answer and the cookie it set."""
    answer = get(port, cookie)
    assert answer.status == 200, (answer.status, answer.body)
    return orjson.loads(answer.body), answer.cookie


def check_increments(
    port: int, *, clients: int, increments: int
) -> tuple[dict[str, Any], str]:
    """``clients`` threads make ``increments`` requests each on one new session.

    Asserts that every increment saw a count of its own and that the final
    count is exact (nothing lost across processes); returns the last answer
    and the session's cookie (``name=value``).
    """
    first, cookie = count(port, None)
    assert cookie is not None and first["n"] == 1

    def client(_: int) -> list[int]:
        return [count(port, cookie)[0]["n"] for _ in range(increments)]

    with ThreadPoolExecutor(max_workers=clients) as pool:
        seen = [n for answers in pool.map(client, range(clients)) for n in answers]
    final, _ = count(port, cookie)
    total = 1 + clients * increments
    assert sorted(seen) == list(range(2, total + 1)), "each increment saw its own count"
    assert final["n"] == total + 1, "serialized: no increment lost across processes"
    return final, cookie
