"""The session cookie: its options, the Set-Cookie header, and a tolerant parser."""

from __future__ import annotations

from dataclasses import dataclass
from email.utils import formatdate
from typing import Final, Literal

from .errors import ConfigError

__all__ = [
    "MAX_COOKIE_HEADER",
    "CookieOptions",
    "clear_cookie_header",
    "name_prefix",
    "parse_cookie_header",
    "set_cookie_header",
]

SameSite = Literal["Lax", "Strict", "None"]

MAX_COOKIE_HEADER: Final = 128 * 1024
"""A longer ``Cookie`` header is ignored whole: the request gets a fresh session.

Twice the largest replica shoal sends (``replica_max_bytes`` is at most 64 KiB)
and 16 times the 8 KiB header limit of nginx, Apache and gunicorn, so no
browser talking to a real server reaches it; it bounds what one request
makes shoal parse.
"""


def name_prefix(name: str) -> str | None:
    """``"__Host-"`` or ``"__Secure-"`` when ``name`` starts with it, as browsers
    match it (case-insensitively), else None."""
    lowered = name[:9].lower()
    if lowered.startswith("__host-"):
        return "__Host-"
    if lowered == "__secure-":
        return "__Secure-"
    return None


@dataclass(frozen=True, slots=True)
class CookieOptions:
    """Options of the session cookie.

    - ``secure=None`` (the default) marks the cookie Secure when the request
      came over HTTPS, so local HTTP development works and production is safe;
      ``True``/``False`` force it.
    - ``max_age=None`` makes a browser-session cookie (gone when the browser
      closes); a number of seconds makes a persistent one, re-sent when the
      session is touched so it slides with the idle timeout.
    - ``domain=".example.com"`` shares the cookie between www1, www2, ...
    - A name starting with ``__Host-`` (``"__Host-shoal"``: this host only,
      no ``domain``, ``path="/"``) or ``__Secure-`` is checked against the
      browsers' prefix rules, and is always sent Secure, whatever the request
      scheme (a browser drops a prefixed cookie without it): such a cookie
      works over HTTPS only, ``secure=False`` is refused.
    """

    name: str = "shoal"
    domain: str | None = None
    path: str = "/"
    secure: bool | None = None
    httponly: bool = True
    samesite: SameSite | None = "Lax"
    partitioned: bool = False
    max_age: int | None = None

    def __post_init__(self) -> None:
        # Types too: a wrong one would otherwise fail at the first request.
        if not isinstance(self.name, str) or not self.name or any(
            c in self.name for c in ' ;,="\t\r\n'
        ):
            raise ConfigError(f"cookie name {self.name!r} is not a valid cookie token")
        if self.samesite not in (None, "Lax", "Strict", "None"):
            raise ConfigError(f"samesite={self.samesite!r}; use 'Lax', 'Strict', 'None' or None")
        if self.samesite == "None" and self.secure is False:
            raise ConfigError("samesite='None' requires a Secure cookie: set secure=True or None")
        if self.partitioned and self.secure is False:
            raise ConfigError("partitioned=True requires a Secure cookie: set secure=True or None")
        if self.domain is not None and not isinstance(self.domain, str):
            raise ConfigError(f"domain={self.domain!r}: give a str such as '.example.com', or None")
        if not isinstance(self.path, str) or not self.path.startswith("/"):
            raise ConfigError(f"path={self.path!r}: give a str that starts with '/'")
        if self.secure is not None and not isinstance(self.secure, bool):
            raise ConfigError(f"secure={self.secure!r}; use True, False or None (follow HTTPS)")
        for flag in ("httponly", "partitioned"):
            if not isinstance(getattr(self, flag), bool):
                raise ConfigError(f"{flag}={getattr(self, flag)!r}; use True or False")
        if self.max_age is not None and (
            isinstance(self.max_age, bool) or not isinstance(self.max_age, int) or self.max_age < 0
        ):
            raise ConfigError(
                f"max_age={self.max_age!r}: give an int number of seconds >= 0, or None for "
                "a browser-session cookie"
            )
        self._check_prefix()

    def _check_prefix(self) -> None:
        """The rules browsers apply to ``__Host-`` and ``__Secure-`` names (RFC 6265bis).

        A cookie that breaks them is silently dropped by the browser, so no
        session would ever stick: refused here, with the fix.
        """
        prefix = name_prefix(self.name)
        if prefix is None:
            return
        if self.secure is False:
            raise ConfigError(
                f"cookie name {self.name!r}: browsers keep a {prefix} cookie only when it is "
                "Secure; set secure=True or None (a prefixed cookie is always sent Secure, so "
                "it works over HTTPS only), or choose a name without the prefix for plain HTTP"
            )
        if prefix != "__Host-":
            return
        if self.domain is not None:
            raise ConfigError(
                f"cookie name {self.name!r}: browsers refuse a Domain on a __Host- cookie; "
                f"drop domain={self.domain!r} (the cookie then goes to this host only), or "
                "use the __Secure- prefix to share it between subdomains"
            )
        if self.path != "/":
            raise ConfigError(
                f"cookie name {self.name!r}: a __Host- cookie needs path='/'; drop "
                f"path={self.path!r}, or use the __Secure- prefix for a cookie of one path"
            )


def set_cookie_header(
    options: CookieOptions, value: str, *, https: bool, name: str | None = None
) -> str:
    """The ``Set-Cookie`` value for ``value`` under ``options``."""
    parts = [f"{name or options.name}={value}", f"Path={options.path}"]
    if options.domain:
        parts.append(f"Domain={options.domain}")
    if options.max_age is not None:
        parts.append(f"Max-Age={options.max_age}")
    secure = https if options.secure is None else options.secure
    # SameSite=None, Partitioned and the __Host-/__Secure- prefixes are refused
    # by browsers without Secure. A prefix forces it even over plain HTTP (a
    # proxy that ends TLS may hide the scheme); rejected: following the scheme,
    # which would send a cookie that every browser drops.
    prefixed = name_prefix(name or options.name) is not None
    if secure or prefixed or options.samesite == "None" or options.partitioned:
        parts.append("Secure")
    if options.httponly:
        parts.append("HttpOnly")
    if options.samesite:
        parts.append(f"SameSite={options.samesite}")
    if options.partitioned:
        parts.append("Partitioned")
    return "; ".join(parts)


def clear_cookie_header(options: CookieOptions, *, https: bool, name: str | None = None) -> str:
    """A ``Set-Cookie`` value that makes the browser drop the cookie."""
    expired = formatdate(0, usegmt=True)
    cleared = CookieOptions(
        name=name or options.name,
        domain=options.domain,
        path=options.path,
        secure=options.secure,
        httponly=options.httponly,
        samesite=options.samesite,
        partitioned=options.partitioned,
        max_age=0,
    )
    return f"{set_cookie_header(cleared, '', https=https)}; Expires={expired}"


def parse_cookie_header(header: str) -> dict[str, str]:
    """Name -> value of a ``Cookie`` header; malformed pairs are skipped, not fatal.

    ``http.cookies.SimpleCookie`` drops every cookie after one it cannot
    parse, so one foreign cookie could log a user out; this parser does not.
    The first occurrence of a name wins, as browsers send the most specific
    path first. A header longer than ``MAX_COOKIE_HEADER`` is ignored whole
    (no cookies): it is no browser's, and a part of it could be anything.
    """
    cookies: dict[str, str] = {}
    if len(header) > MAX_COOKIE_HEADER:
        return cookies
    for chunk in header.split(";"):
        name, sep, value = chunk.partition("=")
        name, value = name.strip(), value.strip()
        if not sep or not name:
            continue
        if len(value) >= 2 and value[0] == value[-1] == '"':
            value = value[1:-1]
        cookies.setdefault(name, value)
    return cookies
