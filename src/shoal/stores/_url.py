"""Store URLs: masking secrets and casting query parameters by a typed table."""

from __future__ import annotations

import math
import re
from collections.abc import Callable, Mapping
from typing import Any
from urllib.parse import parse_qsl, urlsplit, urlunsplit

from ..errors import ConfigError

__all__ = [
    "boolean", "mask_url", "query_options", "seconds", "table_name", "url_path", "url_scheme",
]


def mask_url(url: str) -> str:
    """The URL with its password replaced by ``***``, safe for logs and errors."""
    parts = urlsplit(url)
    if parts.password is None:
        return url
    netloc = parts.netloc.rsplit("@", 1)[1]
    user = parts.username or ""
    return urlunsplit(parts._replace(netloc=f"{user}:***@{netloc}"))


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
            raise ConfigError(f"store URL parameter {name}={raw!r}: {exc}") from exc
    return options


def url_scheme(url: str) -> str:
    """The URL's scheme, lower-cased ("" without one): what picks the store."""
    return url.split(":", 1)[0].lower() if ":" in url else ""


def url_path(url: str) -> str:
    """The filesystem path of a ``scheme:///abs``, ``scheme:rel`` or ``scheme:////abs`` URL."""
    parts = urlsplit(url)
    if parts.netloc not in ("", "localhost"):
        raise ConfigError(
            f"{mask_url(url)}: a file path URL has no host; write {parts.scheme}:///absolute/path "
            f"or {parts.scheme}:relative/path"
        )
    path = parts.path
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


def seconds(*, below: float = math.inf) -> Callable[[str], float]:
    """A cast to a number of seconds that is positive, finite and under ``below``."""

    def cast(raw: str) -> float:
        value = float(raw)
        if not 0 < value < below:
            raise ValueError("expected a positive number of seconds")
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
