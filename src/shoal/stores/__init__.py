"""Session stores, chosen by URL.

``open_store(url)`` maps a URL scheme to its store class, importing optional
backends only when asked for, and names the extra to install when one is
missing.
"""

from __future__ import annotations

import importlib
from typing import Any, Final

from ..errors import ConfigError
from ._url import mask_url, split_url, url_scheme
from .base import AsyncStore, Store

__all__ = ["ASYNC_MODULES", "NETWORK_MODULES", "SCHEMES", "AsyncStore", "Store", "async_twin", "open_async_store", "open_store"]

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
    module_name, class_name, extra = _entry(url)
    module = _import(module_name, url, extra)
    if module_name not in NETWORK_MODULES:
        store: Store = getattr(module, class_name).from_url(url)
        return store
    from ._breaker import BreakerStore, breaker_for, split_breaker_options

    store_url, settings = split_breaker_options(url)
    inner: Store = getattr(module, class_name).from_url(store_url)
    if settings is None:
        return inner
    return BreakerStore(inner, breaker_for(url, settings))


# scheme module -> (module, class) of its native AsyncStore. The others
# (memory, SQLite, file, dbm, MySQL: docs/stores-sql.md) run their sync
# calls in a store thread.
ASYNC_MODULES: Final[dict[str, tuple[str, str]]] = {
    "shoal.stores.redis": ("shoal.stores.redis_async", "AsyncRedisStore"),
    "shoal.stores.postgresql": ("shoal.stores.postgresql_async", "AsyncPostgresStore"),
}


def _entry(url: str) -> tuple[str, str, str | None]:
    """The SCHEMES entry of ``url``; ``ConfigError`` lists valid schemes when unknown."""
    scheme = url_scheme(url)
    entry = SCHEMES.get(scheme)
    if entry is None:
        valid = ", ".join(f"{s}://" for s in sorted(SCHEMES))
        raise ConfigError(f"unknown session store URL {mask_url(url)!r}; valid schemes: {valid}")
    split_url(url)  # a URL urlsplit cannot parse is a ConfigError, before anything reads it
    return entry


def _import(module_name: str, url: str, extra: str | None) -> Any:
    try:
        return importlib.import_module(module_name)
    except ImportError as exc:
        hint = f"pip install 'shoal[{extra}]'" if extra else "reinstall shoal"
        raise ConfigError(f"the {url_scheme(url)}:// store needs {exc.name}: {hint}") from exc


def open_async_store(url: str) -> AsyncStore:
    """The ``AsyncStore`` for ``url``, behind the same circuit breaker as ``open_store(url)``.

    Redis (every redis* scheme) has a native async store (``redis.asyncio``)
    sharing its scripts, layout and parsing with the sync one, and so has
    PostgreSQL (psycopg's async pool, the sync store's statements and
    plans). Every other store runs each sync call in a store thread
    (``stores/_threaded.py``): MySQL (PyMySQL has no async twin) and the
    local stores; see docs/stores-sql.md.
    """
    module_name, _class_name, extra = _entry(url)
    native = ASYNC_MODULES.get(module_name)
    if native is None:
        from ._threaded import ThreadedStore

        return ThreadedStore(open_store(url))
    from ._breaker import AsyncBreakerStore, breaker_for, split_breaker_options

    async_module, async_class = native
    _import(module_name, url, extra)  # the sync module names the missing extra first
    store_url, settings = split_breaker_options(url)
    inner: AsyncStore = getattr(_import(async_module, url, extra), async_class).from_url(store_url)
    if settings is None:
        return inner
    return AsyncBreakerStore(inner, breaker_for(url, settings))


def async_twin(store: Store, url: str | None) -> AsyncStore:
    """The ``AsyncStore`` serving the same data as ``store`` (opened from ``url``, if known).

    A store with a native async twin is opened again from its URL (its own
    client on the event loop, the same breaker); any other store, or a
    store object handed over without a URL, is this very object with its
    calls in a store thread, so that sync and async requests see one data
    set (two ``memory://`` stores would not). A ``MemoryStore`` is called on
    the loop itself (``LoopStore``): none of its calls but a lock wait waits.
    """
    if url is not None and _entry(url)[0] in ASYNC_MODULES:
        return open_async_store(url)
    from ._threaded import LoopStore, ThreadedStore
    from .memory import MemoryStore

    if isinstance(store, MemoryStore):
        return LoopStore(store, owned=False)  # no call of it waits on I/O
    return ThreadedStore(store, owned=False)
