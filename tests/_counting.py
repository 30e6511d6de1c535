"""A real store with every call that reaches it recorded: proves "no store I/O"."""

from __future__ import annotations

from typing import Any

from shoal.stores.base import Store


class CountingStore:
    """Forwards to ``inner``; ``calls`` names each call, ``call_kwargs`` its keywords."""

    def __init__(self, inner: Store) -> None:
        self.inner = inner
        self.url = inner.url
        self.calls: list[str] = []
        self.call_kwargs: list[dict[str, Any]] = []

    def __getattr__(self, name: str) -> Any:
        attr = getattr(self.inner, name)
        if callable(attr):
            def counted(*args: Any, **kwargs: Any) -> Any:
                self.calls.append(name)
                self.call_kwargs.append(kwargs)
                return attr(*args, **kwargs)
            return counted
        return attr
