"""``python -m shoal.cli``: the ``shoal`` command without the console script."""

from __future__ import annotations

from . import main

# The guard matters: the demo's spawned workers import this module again.
if __name__ == "__main__":
    main(prog_name="shoal")
