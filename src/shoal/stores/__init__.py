"""Session stores, chosen by URL.

``open_store(url)`` maps a URL scheme to its store class, importing optional
backends only when asked for, and names the extra to install when one is
missing.
"""

from __future__ import annotations

import importlib
from typing import Final

from ..errors import ConfigError
from ._url import mask_url, split_url, url_scheme
from .base import AsyncStore, Store

__all__ = ["NETWORK_MODULES", "SCHEMES", "AsyncStore", "Store", "open_async_store", "open_store"]

# scheme -> (module, class, pip extra needed or None)
SCHEMES: Final[dict[str, tuple[str, str, str | None]]] = {
    "memory": ("shoal.stores.memory", "MemoryStore", None),
    "sqlite": ("shoal.stores.sqlite", "SQLiteStore", None),
    "file": ("shoal.stores.file", "FileStore", None),
    "dbm": ("shoal.stores.dbm", "DbmStore", None),
    **{
        scheme: ("shoal.stores.redis", "RedisStore", "redis")
        for scheme in (
            "redis", "rediss", "unix", "redis+sentinel", "rediss+sentinel",
            "redis+cluster", "rediss+cluster",
        )
    },  # fmt: skip
    "postgresql": ("shoal.stores.postgresql", "PostgresStore", "postgres"),
    "postgres": ("shoal.stores.postgresql", "PostgresStore", "postgres"),
    "mysql": ("shoal.stores.mysql", "MySQLStore", "mysql"),
    "mariadb": ("shoal.stores.mysql", "MySQLStore", "mysql"),
}

# Stores reached over a socket: open_store() puts each behind the circuit
# breaker of its URL (stores/_breaker.py), shared by the whole process.
NETWORK_MODULES: Final = frozenset(
    {"shoal.stores.redis", "shoal.stores.postgresql", "shoal.stores.mysql"}
)


def open_store(url: str) -> Store:
    """The store for ``url``; ``ConfigError`` lists valid schemes when unknown."""
    scheme = url_scheme(url)
    entry = SCHEMES.get(scheme)
    if entry is None:
        valid = ", ".join(f"{s}://" for s in sorted(SCHEMES))
        raise ConfigError(f"unknown session store URL {mask_url(url)!r}; valid schemes: {valid}")
    split_url(url)  # a URL urlsplit cannot parse is a ConfigError, before anything reads it
    module_name, class_name, extra = entry
    try:
        module = importlib.import_module(module_name)
    except ImportError as exc:
        hint = f"pip install 'shoal[{extra}]'" if extra else "reinstall shoal"
        raise ConfigError(f"the {scheme}:// store needs {exc.name}: {hint}") from exc
    if module_name not in NETWORK_MODULES:
        store: Store = getattr(module, class_name).from_url(url)
        return store
    from ._breaker import BreakerStore, breaker_for, split_breaker_options

    store_url, settings = split_breaker_options(url)
    inner: Store = getattr(module, class_name).from_url(store_url)
    if settings is None:
        return inner
    return BreakerStore(inner, breaker_for(url, settings))


def open_async_store(url: str) -> AsyncStore:
    """The ``AsyncStore`` for ``url``: the same store, its calls off the event loop.

    Each call of the sync store runs in a store thread (``stores/_threaded.py``),
    behind the same circuit breaker as ``open_store(url)``.
    """
    from ._threaded import ThreadedStore

    return ThreadedStore(open_store(url))
