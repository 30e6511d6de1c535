"""The defaults of issue 14, item 2, each pinned: safe without any configuration."""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

from shoal import CookieOptions, SessionManager
from shoal.cookies import set_cookie_header
from shoal.ids import hash_id, is_well_formed, new_id

SRC = Path(__file__).resolve().parents[2] / "src" / "shoal"


def _attributes(header: str) -> dict[str, str]:
    parts = [part.strip() for part in header.split(";")[1:]]
    return {k.lower(): v for k, _, v in (part.partition("=") for part in parts)}


@pytest.mark.parametrize("https", [True, False], ids=["https", "http"])
def test_cookie_defaults_are_httponly_lax_and_secure_over_https(https: bool) -> None:
    manager = SessionManager("memory://")
    attrs = _attributes(set_cookie_header(manager.cookie, new_id(), https=https))
    assert "httponly" in attrs and attrs["samesite"] == "Lax" and attrs["path"] == "/"
    assert ("secure" in attrs) is https
    assert "domain" not in attrs and "max-age" not in attrs  # a host-only browser-session cookie


def test_secure_can_be_forced_either_way() -> None:
    forced = _attributes(set_cookie_header(CookieOptions(secure=True), new_id(), https=False))
    assert "secure" in forced
    off = _attributes(set_cookie_header(CookieOptions(secure=False), new_id(), https=True))
    assert "secure" not in off


def test_ids_are_256_bits_and_only_their_hash_is_a_key() -> None:
    ids = {new_id() for _ in range(1000)}
    assert len(ids) == 1000 and all(is_well_formed(i) and len(i) == 43 for i in ids)
    sample = next(iter(ids))
    assert len(hash_id(sample)) == 64 and sample not in hash_id(sample)


def test_no_pickle_anywhere() -> None:
    """No module of shoal imports pickle or what builds on it (shelve, marshal, dill)."""
    banned = {"pickle", "cPickle", "_pickle", "shelve", "marshal", "dill", "cloudpickle"}
    found = []
    for path in sorted(SRC.rglob("*.py")):
        for node in ast.walk(ast.parse(path.read_text(), str(path))):
            names = []
            if isinstance(node, ast.Import):
                names = [alias.name.split(".")[0] for alias in node.names]
            elif isinstance(node, ast.ImportFrom) and node.module:
                names = [node.module.split(".")[0]]
            found += [f"{path.relative_to(SRC)}: {name}" for name in names if name in banned]
    assert found == []
