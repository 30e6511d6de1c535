"""The session cookie's options and headers: name prefixes, clearing, replica chunks, size.

A browser drops a ``__Host-`` cookie that is not Secure, has a Domain or a
Path other than ``/``, and a ``__Secure-`` cookie that is not Secure
(RFC 6265bis, "Cookie Name Prefixes", matched case-insensitively). Every
header shoal sends for a prefixed name must pass those rules, whatever the
request scheme: ``browser_keeps`` restates them.
"""

from __future__ import annotations

from typing import Any

import pytest

from shoal import ConfigError, CookieOptions
from shoal.cookies import (
    MAX_COOKIE_HEADER,
    clear_cookie_header,
    parse_cookie_header,
    set_cookie_header,
)
from shoal.transports import replica_set_cookies


def attributes(header: str) -> tuple[str, dict[str, str]]:
    """The cookie name and its attributes (lower-cased names) of a Set-Cookie value."""
    pair, *rest = header.split("; ")
    name = pair.partition("=")[0]
    attrs = {}
    for item in rest:
        key, _, value = item.partition("=")
        attrs[key.lower()] = value
    return name, attrs


def browser_keeps(header: str) -> bool:
    """True when a browser would store this Set-Cookie as far as name prefixes go."""
    name, attrs = attributes(header)
    lowered = name.lower()
    if lowered.startswith("__secure-") and "secure" not in attrs:
        return False
    if lowered.startswith("__host-"):
        return "secure" in attrs and "domain" not in attrs and attrs.get("path") == "/"
    return True


@pytest.mark.parametrize(
    ("options", "match"),
    [
        pytest.param({"name": "__Host-shoal", "domain": ".example.com"},
                     r"__Host-shoal.*Domain.*drop domain='.example.com'.*__Secure-",
                     id="host-with-domain"),
        pytest.param({"name": "__Host-shoal", "path": "/app"},
                     r"__Host-shoal.*path='/'.*path='/app'.*__Secure-", id="host-with-path"),
        pytest.param({"name": "__Host-shoal", "secure": False},
                     r"__Host-shoal.*Secure.*secure=True or None.*HTTPS", id="host-not-secure"),
        pytest.param({"name": "__Secure-shoal", "secure": False},
                     r"__Secure-shoal.*Secure.*secure=True or None.*HTTPS",
                     id="secure-not-secure"),
        pytest.param({"name": "__host-shoal", "domain": "example.com"}, r"__host-shoal.*Domain",
                     id="host-lower-case"),
        pytest.param({"name": "__SECURE-shoal", "secure": False}, r"__SECURE-shoal.*Secure",
                     id="secure-upper-case"),
    ],
)
def test_prefix_rules_are_config_errors_naming_the_fix(options: dict[str, Any], match: str) -> None:
    with pytest.raises(ConfigError, match=match):
        CookieOptions(**options)


@pytest.mark.parametrize(
    "options",
    [
        pytest.param({"name": "__Host-shoal"}, id="host-defaults"),
        pytest.param({"name": "__Host-shoal", "secure": True, "samesite": "Strict"},
                     id="host-secure"),
        pytest.param({"name": "__Host-shoal", "samesite": "None", "partitioned": True},
                     id="host-partitioned"),
        pytest.param({"name": "__Secure-shoal", "domain": ".example.com", "path": "/app"},
                     id="secure-domain-path"),
        pytest.param({"name": "shoal", "domain": ".example.com", "secure": False},
                     id="no-prefix-anything-goes"),
        pytest.param({"name": "my__Host-shoal", "domain": ".example.com", "secure": False},
                     id="prefix-not-at-start"),
    ],
)
def test_valid_prefixed_options_are_accepted(options: dict[str, Any]) -> None:
    assert CookieOptions(**options).name == options["name"]


@pytest.mark.parametrize("https", [pytest.param(False, id="http"), pytest.param(True, id="https")])
@pytest.mark.parametrize(
    ("options", "secure"),
    [
        pytest.param(CookieOptions(), None, id="plain-follows-scheme"),
        pytest.param(CookieOptions(name="__Host-shoal"), True, id="host-always-secure"),
        pytest.param(CookieOptions(name="__Secure-shoal", domain=".example.com"), True,
                     id="secure-always-secure"),
        pytest.param(CookieOptions(name="__Host-shoal", secure=True), True, id="host-forced"),
    ],
)
def test_prefixed_names_are_always_sent_secure(
    options: CookieOptions, secure: bool | None, https: bool
) -> None:
    expected = https if secure is None else secure
    for header in (
        set_cookie_header(options, "v", https=https),
        clear_cookie_header(options, https=https),
    ):
        _, attrs = attributes(header)
        assert ("secure" in attrs) is expected, header
        assert browser_keeps(header), header


def test_the_clearing_header_keeps_the_host_rules() -> None:
    header = clear_cookie_header(CookieOptions(name="__Host-shoal"), https=False)
    name, attrs = attributes(header)
    assert name == "__Host-shoal"
    assert attrs["path"] == "/" and "domain" not in attrs and "secure" in attrs
    assert attrs["max-age"] == "0"


@pytest.mark.parametrize("https", [pytest.param(False, id="http"), pytest.param(True, id="https")])
@pytest.mark.parametrize(
    "options",
    [
        pytest.param(CookieOptions(name="__Host-shoal"), id="host"),
        pytest.param(CookieOptions(name="__Secure-shoal", domain=".example.com", path="/app"),
                     id="secure"),
    ],
)
def test_replica_chunks_carry_the_prefix_and_keep_its_rules(
    options: CookieOptions, https: bool
) -> None:
    prefix = options.name.split("-")[0] + "-"
    held = [f"{options.name}_r{i}" for i in range(8)]
    sent = replica_set_cookies(options, "1." + "x" * 20000, False, held, https=https)
    cleared = replica_set_cookies(options, None, True, held, https=https)
    assert len(sent) == 8 and len(cleared) == 8  # 6 chunks sent, 2 held ones cleared
    for header in sent + cleared:
        name, _ = attributes(header)
        assert name.startswith(prefix), header
        assert browser_keeps(header), header


@pytest.mark.parametrize(
    ("header", "expected"),
    [
        pytest.param("shoal=abc; other=1", {"shoal": "abc", "other": "1"}, id="ordinary"),
        pytest.param("a=1; b=" + "x" * (MAX_COOKIE_HEADER - 6), {}, id="one-over-the-limit"),
        pytest.param("shoal=" + "A" * 43 + "; big=" + "x" * MAX_COOKIE_HEADER, {},
                     id="valid-id-in-an-oversized-header"),
        pytest.param("a=1; b=" + "x" * (MAX_COOKIE_HEADER - 7),
                     {"a": "1", "b": "x" * (MAX_COOKIE_HEADER - 7)}, id="at-the-limit"),
    ],
)
def test_an_oversized_cookie_header_is_ignored(header: str, expected: dict[str, str]) -> None:
    assert parse_cookie_header(header) == expected


def test_the_header_limit_leaves_room_for_the_largest_replica() -> None:
    from shoal.replica import MAX_MAX_BYTES
    from shoal.transports import COOKIE_BUDGET, MAX_CHUNKS

    assert MAX_COOKIE_HEADER >= MAX_MAX_BYTES + MAX_CHUNKS * 64 + COOKIE_BUDGET
