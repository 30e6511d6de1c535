"""Where configuration comes from the environment: the edge, read once."""

from __future__ import annotations

import os
from pathlib import Path

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
    return os.environ.get("SHOAL_STORE") or f"sqlite://{path}"


def secret_keys_from_env() -> list[str]:
    """``$SHOAL_SECRET_KEYS``: comma-separated, newest first."""
    raw = os.environ.get("SHOAL_SECRET_KEYS", "")
    return [key.strip() for key in raw.split(",") if key.strip()]
