"""The ``shoal`` command: run the demo, then inspect and maintain a session store.

    shoal demo                  one session served by several processes
    shoal ls | show | rm        list, inspect and end sessions
    shoal purge | stats         clean up expired records; counts per application
    shoal watch                 the live stream of session events from every node

The store is ``--store URL``, else ``$SHOAL_STORE``, else the embedded SQLite
file (see ``shoal.config``). Every command takes ``--json``.
"""

from __future__ import annotations

import click

from ..config import default_store_url
from . import admin, demo, watch
from ._common import Settings, ShoalGroup

__all__ = ["main"]


@click.group(cls=ShoalGroup, context_settings={"help_option_names": ["-h", "--help"]})
@click.option(
    "--store",
    metavar="URL",
    envvar="SHOAL_STORE",
    show_envvar=True,
    help="Session store URL.  [default: the embedded SQLite file]",
)
@click.option(
    "--app-id",
    help="Application namespace.  [default: every app; 'demo' for the demo]",
)
@click.version_option(package_name="shoal")
@click.pass_context
def main(ctx: click.Context, store: str | None, app_id: str | None) -> None:
    """Web sessions shared by every process on every server."""
    ctx.obj = Settings(store_url=store or default_store_url(), app_id=app_id)


for _command in (*admin.COMMANDS, demo.demo, watch.watch):
    main.add_command(_command)
