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


# Comparisons with == that name a token or digest, each not a client's secret.
_NOT_SECRETS = {
    "stores/_lockfile.py": "current.token != token",  # lease tokens: made and kept by the server
    "stores/state.py": "lease_token",  # the same, in the local stores' records
    "transports.py": "_digest(wire) != digest",  # a public checksum of the client's own chunks
}


def test_no_secret_is_compared_with_eq() -> None:
    """Client-supplied secrets are compared with ``hmac.compare_digest`` (or by GCM's tag check).

    A static scan: any ``==``/``!=`` whose operands name a token, secret,
    digest, MAC, tag or nonce must be in ``_NOT_SECRETS`` with its reason.
    """
    suspicious = ("token", "secret", "digest", "mac", "tag", "nonce")
    found = []
    for path in sorted(SRC.rglob("*.py")):
        relative = str(path.relative_to(SRC))
        for node in ast.walk(ast.parse(path.read_text(), str(path))):
            if not isinstance(node, ast.Compare) or not any(
                isinstance(op, (ast.Eq, ast.NotEq)) for op in node.ops
            ):
                continue
            names = {n.id for n in ast.walk(node) if isinstance(n, ast.Name)}
            names |= {n.attr for n in ast.walk(node) if isinstance(n, ast.Attribute)}
            if any(word in name.lower() for name in names for word in suspicious):
                text = ast.unparse(node)
                if _NOT_SECRETS.get(relative, "\0") not in text:
                    found.append(f"{relative}:{node.lineno}: {text}")
    assert found == []


def test_once_only_tokens_are_checked_in_constant_time(monkeypatch: pytest.MonkeyPatch) -> None:
    import hmac

    compared: list[tuple[str, str]] = []
    real = hmac.compare_digest

    def spy(a: str, b: str) -> bool:
        compared.append((a, b))
        return real(a, b)

    monkeypatch.setattr(hmac, "compare_digest", spy)
    manager = SessionManager("memory://")
    with manager.open() as session:
        token = session.issue_token("buy")
    with manager.open(session.id) as later:
        assert later.consume_token("buy", token)
    assert len(compared) == 1 and compared[0][0] == compared[0][1] and token not in compared[0]
