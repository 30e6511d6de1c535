"""Where configuration comes from the environment: the edge, read once."""

from __future__ import annotations

import os
from pathlib import Path
from typing import TYPE_CHECKING
from urllib.parse import quote

from .errors import ConfigError

if TYPE_CHECKING:
    from .sealing import Secret

__all__ = ["default_data_dir", "default_store_url", "secret_keys_from_env"]


def default_data_dir() -> Path:
    """``$SHOAL_DATA_DIR``, else ``$XDG_DATA_HOME/shoal``, else ``~/.local/share/shoal``."""
    explicit = os.environ.get("SHOAL_DATA_DIR")
    if explicit:
        return Path(explicit)
    xdg = os.environ.get("XDG_DATA_HOME")
    base = Path(xdg) if xdg else Path.home() / ".local" / "share"
    return base / "shoal"


def default_store_url() -> str:
    """``$SHOAL_STORE``, else the embedded SQLite file in the data directory."""
    path = (default_data_dir() / "sessions.db").absolute()
    # Quoted: store URL paths are percent-decoded, so a "%" or "?" in the
    # data directory must not be read as an escape or a query.
    return os.environ.get("SHOAL_STORE") or f"sqlite://{quote(str(path))}"


def secret_keys_from_env() -> list[Secret]:
    """``$SHOAL_SECRET_KEYS``: comma-separated, newest first; ``[]`` when unset.

    Each key is checked here (``shoal.sealing.check_secret``), so a bad one
    is a ``ConfigError`` naming the variable and the key's position, and
    comes back as a ``Secret``, which no ``repr`` or traceback shows.
    """
    from .sealing import check_secret  # cryptography only when keys are read

    raw = os.environ.get("SHOAL_SECRET_KEYS", "")
    keys = [key.strip() for key in raw.split(",") if key.strip()]
    try:
        return [check_secret(key, position) for position, key in enumerate(keys, start=1)]
    except ConfigError as exc:
        raise ConfigError(f"SHOAL_SECRET_KEYS: {exc}") from None
