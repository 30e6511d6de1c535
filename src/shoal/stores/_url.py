"""Store URLs: masking secrets and casting query parameters by a typed table."""

from __future__ import annotations

import math
import re
from collections.abc import Callable, Mapping
from typing import Any
from urllib.parse import SplitResult, parse_qsl, unquote, urlsplit

from ..errors import ConfigError

__all__ = [
    "boolean", "host_ports", "mask_url", "query_options", "seconds", "split_url", "table_name",
    "url_path", "url_scheme",
]


# Query parameters whose value is a secret (libpq's password and sslpassword,
# a token...): masked like the password of the netloc.
_SECRET_PARAMETER = re.compile(r"pass|secret|token", re.IGNORECASE)


def mask_url(url: str) -> str:
    """The URL with its passwords replaced by ``***``, safe for logs and errors.

    Both the netloc's ``user:password@`` and query parameters such as
    ``?password=`` are masked. Written without ``urlsplit``, which raises on
    a malformed URL (an unclosed ``[``): the error about such a URL must
    still be able to show it, masked. The rest is kept as written.
    """
    start = url.partition("?")[0].find("//")
    if start >= 0:
        start += 2
        # The password ends at the *last* "@", wherever it is. A password
        # written with a raw "/", "?" or "#" (base64 has "/") ends the netloc
        # there for urlsplit and the drivers, and an error about the URL
        # would show the rest of it in the clear. Rejected: cutting at the
        # first "/?#" as urlsplit does (that leak); the cost is that an "@"
        # in a query value over-masks (``redis://h:***@b``), never a leak.
        at = url.rfind("@", start)
        colon = url.find(":", start, at) if at >= 0 else -1
        if colon >= 0:
            url = f"{url[:colon]}:***{url[at:]}"
    head, sep, query = url.partition("?")
    if sep:
        pairs = []
        for pair in query.split("&"):
            name, eq, _value = pair.partition("=")
            pairs.append(f"{name}=***" if eq and _SECRET_PARAMETER.search(unquote(name)) else pair)
        query = "&".join(pairs)
    return head + sep + query


def split_url(url: str) -> SplitResult:
    """``urlsplit(url)``; a URL it cannot parse is a ``ConfigError`` (masked).

    So is a password written with a raw ``/``, ``?`` or ``#``: urlsplit (and
    every driver) ends the netloc there, and the messages about the pieces
    (a "port" or "database" that is really part of the password) would show
    it. Refused here, before any store reads the pieces.
    """
    try:
        parts = urlsplit(url)
    except ValueError as exc:
        reason = str(exc)
        if "IPv6" in reason:
            reason = (
                "invalid IPv6 host (a '[' without its ']'); write an IPv6 address in brackets, "
                "e.g. [::1]:6379"
            )
        raise ConfigError(f"{mask_url(url)} is not a valid URL: {reason}") from None
    if _password_cut_short(url, parts):
        raise ConfigError(
            f"{mask_url(url)}: an '@' after the host part, as when a password holds a raw "
            "'/', '?' or '#', which ends the host part early; percent-encode them in the "
            "password ('/' is %2F, '?' is %3F, '#' is %23, '@' is %40)"
        )
    return parts


def _password_cut_short(url: str, parts: SplitResult) -> bool:
    """Whether ``user:pass@`` runs past the netloc urlsplit found.

    An "@" after the netloc is no password's end when it is in a query value
    (``?client_name=ops@example``) and the netloc reads as ``host:port``.
    """
    if not parts.netloc:
        return False
    start = url.find("//") + 2
    end = start + len(parts.netloc)
    at = url.rfind("@")
    if at < end or ":" not in url[start:at]:
        return False
    query = url.find("?", end)
    if query < 0 or at < query:
        return True  # the "@" is in the path or fragment
    if "=" not in url[max(url.rfind("&", query, at), query) + 1 : at]:
        return True  # in a parameter's name: no name holds an "@"
    for item in parts.netloc.rpartition("@")[2].split(","):
        _host, colon, port = item.rpartition("]")[2].partition(":")
        if colon and not port.strip().isdigit():
            return True  # "user:pa" read as host "user", port "pa"
    return False


def host_ports(
    url: str, netloc: str, *, default_port: int, allow_empty_host: bool = True
) -> list[tuple[str, int]]:
    """The ``host[:port][,host[:port]...]`` of ``netloc``, each port checked.

    IPv6 hosts are bracketed (``[::1]:6379``). A port that is not a number
    from 1 to 65535 is a ``ConfigError``: nothing could ever connect to it.
    An empty host is ``""`` (the client's default) unless refused.
    """
    masked = mask_url(url)
    hosts = []
    for item in netloc.rpartition("@")[2].split(","):
        item = item.strip()
        if item.startswith("["):
            host, bracket, rest = item[1:].partition("]")
            if not bracket or (rest and not rest.startswith(":")):
                raise ConfigError(
                    f"{masked}: expected [IPv6 address]:port, got {item!r}; "
                    "e.g. [::1]:6379"
                )
            port_text = rest[1:]
        elif item.count(":") > 1:
            raise ConfigError(
                f"{masked}: {item!r} looks like an IPv6 address; write it in brackets, "
                "e.g. [::1]:6379"
            )
        else:
            host, _, port_text = item.partition(":")
        host = unquote(host)
        if not host and not allow_empty_host:
            raise ConfigError(f"{masked}: expected host:port[,host:port...], got {item!r}")
        if not port_text:
            hosts.append((host, default_port))
            continue
        if not re.fullmatch(r"[0-9]+", port_text):
            raise ConfigError(
                f"{masked}: port {port_text!r} is not a number; write host:port with a "
                "port from 1 to 65535"
            )
        port = int(port_text)
        if not 1 <= port <= 65535:
            raise ConfigError(f"{masked}: port {port} is out of range; use 1 to 65535")
        hosts.append((host, port))
    return hosts


def query_options(url: str, table: Mapping[str, Callable[[str], Any]]) -> dict[str, Any]:
    """Cast the URL's query parameters by ``table``; unknown names are an error."""
    options: dict[str, Any] = {}
    for name, raw in parse_qsl(urlsplit(url).query, keep_blank_values=True):
        cast = table.get(name)
        if cast is None:
            valid = ", ".join(sorted(table)) or "none"
            raise ConfigError(
                f"unknown store URL parameter {name!r} in {mask_url(url)}; valid: {valid}"
            )
        try:
            options[name] = cast(raw)
        except ValueError as exc:
            shown = "***" if _SECRET_PARAMETER.search(name) else repr(raw)
            raise ConfigError(f"store URL parameter {name}={shown}: {exc}") from exc
    return options


def url_scheme(url: str) -> str:
    """The URL's scheme, lower-cased ("" without one): what picks the store."""
    return url.split(":", 1)[0].lower() if ":" in url else ""


def url_path(url: str) -> str:
    """The filesystem path of a ``scheme:///abs``, ``scheme:rel`` or ``scheme:////abs`` URL."""
    parts = split_url(url)
    if parts.netloc not in ("", "localhost"):
        raise ConfigError(
            f"{mask_url(url)}: a file path URL has no host; write {parts.scheme}:///absolute/path "
            f"or {parts.scheme}:relative/path"
        )
    # Percent-decoded, as every URL path: "my%20dir" is "my dir", not a
    # directory named "my%20dir" (and "%3F" writes a "?").
    path = unquote(parts.path)
    if path.startswith("//"):
        path = path[1:]  # SQLAlchemy's four-slash absolute form
    if not path:
        raise ConfigError(f"{mask_url(url)} names no path")
    return path


def boolean(raw: str) -> bool:
    """Cast ``1/true/yes/on`` and ``0/false/no/off``."""
    lowered = raw.lower()
    if lowered in ("1", "true", "yes", "on"):
        return True
    if lowered in ("0", "false", "no", "off"):
        return False
    raise ValueError("expected true or false")


def seconds(*, below: float = math.inf, allow_zero: bool = False) -> Callable[[str], float]:
    """A cast to a number of seconds that is positive (or zero), finite and under ``below``."""

    def cast(raw: str) -> float:
        value = float(raw)
        if allow_zero and value == 0:
            return value
        if not 0 < value < below:
            kind = "finite number of seconds >= 0" if allow_zero else "positive number of seconds"
            under = f" under {below:.15g}" if below < math.inf else ""
            raise ValueError(f"expected a {kind}{under}")
        return value

    return cast


def table_name(max_length: int) -> Callable[[str], str]:
    """A cast to a SQL table name of at most ``max_length`` characters.

    Only a letter or ``_`` then letters, digits or ``_``: the name is put into
    statements as an identifier, so nothing that needs quoting gets through.
    """
    shape = re.compile(rf"[A-Za-z_][A-Za-z0-9_]{{0,{max_length - 1}}}")

    def cast(raw: str) -> str:
        if not shape.fullmatch(raw):
            raise ValueError(
                f"a table name is a letter or _, then up to {max_length - 1} letters, digits or _"
            )
        return raw

    return cast
