"""What the WSGI and ASGI middlewares share: their options, checked once."""

from __future__ import annotations

from typing import TYPE_CHECKING, Generic, TypeVar

from ._replay import check_replay_options
from .transports import Transport, transport_for

if TYPE_CHECKING:
    from .manager import SessionManager

App = TypeVar("App")


class MiddlewareOptions(Generic[App]):
    """A session middleware's application, manager and options.

    ``retry_conflicts=N`` re-runs a request up to N times, each with a fresh
    session, when its save raises ``ConflictError`` (optimistic policy) and
    its body can be replayed: a declared length of at most
    ``max_replay_body`` bytes, or no body, read up front before the first
    run (``shoal._replay``). The failed run's response is never sent: the
    commit comes before the response starts. A conflict that cannot be
    retried is answered with 409. Re-running repeats the view's other side
    effects, so enable it for views that are safe to run again.

    ``transport`` carries the id (``shoal.transports``): by default the
    manager's ``transport=``, else a cookie with its cookie options;
    ``HeaderTransport("X-Session-Id")`` for API clients.
    """

    def __init__(
        self,
        app: App,
        manager: SessionManager,
        *,
        retry_conflicts: int = 0,
        max_replay_body: int = 65536,
        transport: Transport | None = None,
    ) -> None:
        check_replay_options(retry_conflicts, max_replay_body)
        self.app = app
        self.manager = manager
        self.retry_conflicts = retry_conflicts
        self.max_replay_body = max_replay_body
        self.transport = transport_for(manager, transport)
