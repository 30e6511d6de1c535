"""A progress bar on stderr for the long admin commands (``purge``, ``copy``).

On stderr, so ``--json`` and a table on stdout stay clean for a pipe; off
with ``--json`` and when stderr is not a terminal (a log file gets no
repainted bars; ``FORCE_COLOR`` or ``TTY_COMPATIBLE=1`` force it on).
"""

from __future__ import annotations

from rich.console import Console
from rich.progress import (
    BarColumn,
    MofNCompleteColumn,
    Progress,
    TextColumn,
    TimeElapsedColumn,
)

__all__ = ["progress_bar"]


def progress_bar(*, quiet: bool) -> Progress:
    """A bar showing done/total and elapsed time; disabled when ``quiet``."""
    console = Console(stderr=True, markup=False)
    return Progress(
        TextColumn("{task.description}"),
        BarColumn(),
        MofNCompleteColumn(),
        TimeElapsedColumn(),
        console=console,
        disable=quiet or not console.is_terminal,
    )
