"""Sizes as people read them, for messages and the command line's tables."""

from __future__ import annotations

__all__ = ["human_size"]


def human_size(size: int) -> str:
    """Bytes in binary units, one decimal above a KiB: ``312 B``, ``1.5 KiB``, ``40.0 MiB``.

    The CLI's tables and the session-limit errors show these; ``--json``
    keeps the exact byte counts.
    """
    if size < 1024:
        return f"{size} B"
    value = float(size)
    for unit in ("KiB", "MiB", "GiB", "TiB"):
        value /= 1024
        if round(value, 1) < 1024 or unit == "TiB":
            break
    return f"{value:.1f} {unit}"
