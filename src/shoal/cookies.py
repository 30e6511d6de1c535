"""The session cookie: its options, the Set-Cookie header, and a tolerant parser."""

from __future__ import annotations

from dataclasses import dataclass
from email.utils import formatdate
from typing import Literal

from .errors import ConfigError

__all__ = ["CookieOptions", "clear_cookie_header", "parse_cookie_header", "set_cookie_header"]

SameSite = Literal["Lax", "Strict", "None"]


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
    # SameSite=None and Partitioned are refused by browsers without Secure.
    if secure or options.samesite == "None" or options.partitioned:
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
    path first.
    """
    cookies: dict[str, str] = {}
    for chunk in header.split(";"):
        name, sep, value = chunk.partition("=")
        name, value = name.strip(), value.strip()
        if not sep or not name:
            continue
        if len(value) >= 2 and value[0] == value[-1] == '"':
            value = value[1:-1]
        cookies.setdefault(name, value)
    return cookies
