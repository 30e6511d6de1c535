"""Coverage-guided fuzzing of shoal's parsers with atheris, for long runs outside CI.

The targets are the ones CI runs under hypothesis with a small budget
(``tests/fuzz/_targets.py``); here libFuzzer mutates inputs for as long as
you let it, guided by the coverage of shoal's code. Any exception other than
the target's own ``return`` is a crash: libFuzzer writes the input to
``crash-<sha1>``; copy it into ``tests/fuzz/corpus/<target>/`` with the fix.

    pip install -e '.[fuzz]'
    mkdir -p /tmp/fuzz-cookie
    python fuzz/fuzz_shoal.py --target=cookie -max_total_time=600 \\
        /tmp/fuzz-cookie tests/fuzz/corpus/cookie

The first directory collects the inputs libFuzzer finds interesting; the
second seeds it from the regression corpus (read only). ``--target=all``
fuzzes every target, the first input byte choosing which.
"""

from __future__ import annotations

import sys
from pathlib import Path

import atheris

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

with atheris.instrument_imports(include=["shoal"]):
    from tests.fuzz._targets import TARGETS


def _choose(argv: list[str]) -> tuple[str, list[str]]:
    """``--target=NAME`` from the command line; the rest goes to libFuzzer."""
    chosen, rest = "all", []
    for arg in argv:
        if arg.startswith("--target="):
            chosen = arg.partition("=")[2]
        else:
            rest.append(arg)
    if chosen != "all" and chosen not in TARGETS:
        names = ", ".join(sorted(TARGETS))
        raise SystemExit(f"unknown --target={chosen!r}; valid: all, {names}")
    return chosen, rest


def main() -> None:
    chosen, argv = _choose(sys.argv)
    names = sorted(TARGETS)

    def one_input(data: bytes) -> None:
        if chosen != "all":
            TARGETS[chosen](data)
        elif data:
            TARGETS[names[data[0] % len(names)]](data[1:])

    atheris.Setup(argv, one_input)
    atheris.Fuzz()


if __name__ == "__main__":
    main()
