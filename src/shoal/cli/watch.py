"""``shoal watch``: the live stream of session events, from every node of the store.

It listens on the store's own events channel (``shoal.cluster.channels``) as
one more node (``watch-<host>-<pid>-<rand>``), so it sees what every app
node sends with ``events=True``. Readable lines by default, one JSON object
per line with ``--json``; ``--count`` and ``--timeout`` bound it (scripts,
tests), Ctrl-C ends it.
"""

from __future__ import annotations

import queue
import time

import click
import orjson

from ..cluster.events import Event
from ..cluster.hub import Hub
from ..cluster.node import default_node_id
from ..codec import JsonCodec
from ._common import CliError, Settings, json_option, store_options

__all__ = ["watch"]


@click.command("watch")
@store_options
@click.option(
    "--count", type=click.IntRange(min=1), default=None, help="Stop after this many events."
)
@click.option(
    "--timeout",
    type=click.FloatRange(min=0),
    default=None,
    help="Stop after this many seconds (whatever came by then).",
)
@json_option
@click.pass_obj
def watch(settings: Settings, count: int | None, timeout: float | None, as_json: bool) -> None:
    """Print session events from every node as they happen.

    Events are sent by app nodes whose manager has events=True. Lines show
    time, event, session ref (hashed: never a session id), node and
    principal; --json prints one JSON object per line.
    """
    app_id = settings.app_id or "default"
    received: queue.Queue[Event] = queue.Queue()
    with settings.store() as store:
        hub = Hub(
            app_id=app_id, node_id=f"watch-{default_node_id()}", store=store,
            codec=JsonCodec(), clock=time.time, events=True,
        )  # fmt: skip
        try:
            if hub.channel is None:
                raise CliError(
                    f"{store.url} has no events channel (SQLite, Redis and PostgreSQL have "
                    "one); nothing to watch"
                )
            hub.add_listener(received.put)
            if not as_json:
                # One app at a time (each app has its own channel on Redis): say
                # so when the default was taken, since ls and stats show every app.
                which = (
                    "" if settings.app_id else
                    " (SessionManager's default app_id; --app-id APP for another)"
                )  # fmt: skip
                click.echo(
                    f"watching session events of app {app_id!r}{which} on {store.url} "
                    f"({hub.channel.name}); Ctrl-C to stop",
                    err=True,
                )
            _stream(received, count, timeout, as_json)
        finally:
            hub.close()


def _stream(received: queue.Queue[Event], count: int | None, timeout: float | None,
            as_json: bool) -> None:  # fmt: skip
    deadline = None if timeout is None else time.monotonic() + timeout
    shown = 0
    try:
        while count is None or shown < count:
            wait = 0.5 if deadline is None else deadline - time.monotonic()
            if wait <= 0:
                return
            try:
                event = received.get(timeout=min(wait, 0.5))
            except queue.Empty:
                continue
            shown += 1
            if as_json:
                click.echo(orjson.dumps(event.as_dict()).decode())
            else:
                click.echo(_line(event))
    except KeyboardInterrupt:
        return


def _line(event: Event) -> str:
    when = time.strftime("%H:%M:%S", time.localtime(event.time))
    who = f" user={event.principal}" if event.principal else ""
    detail = " ".join(f"{k}={v}" for k, v in event.detail.items())
    return f"{when}  {event.event:<12} {event.ref}  node={event.node_id}{who}  {detail}".rstrip()
