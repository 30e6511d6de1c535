"""Bounded fuzzing in CI (issue 14, item 5): every parser a client reaches, no uncaught error.

Each target of ``_targets.py`` runs on (1) every file of its regression
corpus, ``tests/fuzz/corpus/<target>/`` (inputs that once broke shoal, and
seeds), and (2) a hypothesis search with a fixed budget: ``derandomize``
makes every run try the same inputs, so CI is deterministic, and
``max_examples`` keeps the whole module well under a minute on two cores.
Longer, coverage-guided runs: ``fuzz/fuzz_shoal.py`` (atheris), see
docs/security.md.
"""

from __future__ import annotations

from pathlib import Path

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from tests.fuzz._targets import TARGETS, Target

CORPUS = Path(__file__).parent / "corpus"
BUDGET = settings(
    max_examples=1500,
    derandomize=True,
    deadline=None,
    database=None,
    suppress_health_check=[HealthCheck.too_slow],
)

# Text near the grammars the parsers expect, so the search reaches past the
# first check: cookie syntax, base64url, digits of every script, quotes.
_ALPHABET = st.sampled_from(
    list("AZaz09_-.=;|\" \t,") + ["³", "٣", "𝟗", "\x00", "\xff", "é", "\ud800", "shoal", "shoal_r0=",
                                 "shoal_r1=", "1.", "2.", "__t__"]
)
_NEAR = st.lists(_ALPHABET, max_size=60).map(
    lambda parts: "".join(parts).encode("utf-8", "surrogatepass")
)
_JSON_TAGS = st.sampled_from(
    ["int", "float", "tuple", "set", "frozenset", "dict", "datetime", "date", "time", "uuid",
     "decimal", "bytes", "nope"]
)
_JSONISH = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats() | st.text(max_size=10),
    lambda children: st.lists(children, max_size=3) | st.dictionaries(
        st.text(max_size=5), children, max_size=3
    ),
    max_leaves=8,
)
_TAGGED = st.builds(
    lambda tag, value: b'j{"__t__":' + f'"{tag}"'.encode() + b',"v":' + _dumps(value) + b"}",
    _JSON_TAGS, _JSONISH,
)


def _dumps(value: object) -> bytes:
    import orjson

    try:
        return orjson.dumps(value)
    except TypeError:
        return b"null"


INPUTS = {
    "cookie": st.binary(max_size=300) | _NEAR,
    "session_id": st.binary(min_size=40, max_size=46) | _NEAR | st.binary(max_size=64),
    "header": st.binary(max_size=200) | _NEAR,
    "replica": st.binary(max_size=300) | _NEAR,
    "codec": st.binary(max_size=120) | _TAGGED | _NEAR.map(lambda b: b"j" + b),
    "request": st.binary(max_size=300) | _NEAR,
    "asgi_request": st.binary(max_size=300) | st.lists(_NEAR, max_size=4).map(b"\n".join),
    "content_length": st.binary(max_size=8) | _NEAR | st.from_regex(r"\A[ \t]*[0-9_+-]{0,4}[ \t]*\Z").map(
        str.encode
    ),
}


def _corpus() -> list[tuple[str, Path]]:
    return sorted(
        (path.parent.name, path) for path in CORPUS.glob("*/*") if path.is_file()
    )


def test_every_target_has_inputs_and_a_corpus() -> None:
    assert set(INPUTS) == set(TARGETS)
    assert {name for name, _ in _corpus()} == set(TARGETS)


@pytest.mark.parametrize(
    ("target", "path"), _corpus(), ids=[f"{n}/{p.name}" for n, p in _corpus()]
)
def test_the_regression_corpus(target: str, path: Path) -> None:
    TARGETS[target](path.read_bytes())


@pytest.mark.parametrize("name", sorted(TARGETS))
def test_fuzz(name: str) -> None:
    target: Target = TARGETS[name]

    @BUDGET
    @given(INPUTS[name])
    def run(data: bytes) -> None:
        target(data)

    run()
