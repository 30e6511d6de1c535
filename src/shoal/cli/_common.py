"""What every ``shoal`` command shares: where the store is, JSON output, errors, times.

Exit codes: 0 done, 1 failed (store unavailable, no store at that path, no
such session, demo check failed), 2 bad invocation (unknown option, bad store URL, malformed or
ambiguous session id). Every failure is one line on stderr, never a traceback.
"""

from __future__ import annotations

import contextlib
import os
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from typing import Any, TypeVar

import click
import orjson
from rich import box
from rich.console import Console
from rich.table import Table

from .._units import human_size
from ..errors import ConfigError, ShoalError
from ..stores import open_store
from ..stores._url import url_path, url_scheme
from ..stores.base import RecordInfo, Store

__all__ = [
    "BadInput",
    "CliError",
    "Settings",
    "ShoalGroup",
    "duration",
    "emit_json",
    "human_size",
    "json_option",
    "local_time",
    "new_console",
    "new_table",
    "plural",
    "relative",
    "state_of",
    "store_option",
    "store_options",
]

F = TypeVar("F", bound=Callable[..., Any])


class CliError(click.ClickException):
    """A failure, told in one line on stderr; exit code 1."""

    exit_code = 1

    def __init__(self, message: str) -> None:
        super().__init__(" ".join(message.split()))  # one line, whatever the cause said


class BadInput(CliError):
    """A bad store URL, option or session id; exit code 2, as click's usage errors."""

    exit_code = 2


class ShoalGroup(click.Group):
    """Turns shoal's own errors into one-line messages instead of tracebacks."""

    def invoke(self, ctx: click.Context) -> Any:
        try:
            return super().invoke(ctx)
        except ConfigError as exc:
            raise BadInput(str(exc)) from exc
        except ShoalError as exc:
            raise CliError(str(exc)) from exc


@dataclass(slots=True)
class Settings:
    """The group's options, which a subcommand's own ``--store``/``--app-id`` override."""

    store_url: str
    app_id: str | None  # None: every application, where a command can list them all

    @contextlib.contextmanager
    def store(self, *, create: bool = False) -> Iterator[Store]:
        """The store, opened for one command and closed after it.

        Unless ``create``, the store must be there already, and is used as it
        is: a local store (``sqlite``, ``file``, ``dbm``) whose path does not
        exist is an error, checked before opening (those stores create their
        files and directories on first use, and a mistyped path must not leave
        an empty store behind, nor read as one); and a store that can tell
        (``require_existing``: the SQL, file and dbm stores) is checked to be a
        session store and opened so that it makes no DDL and changes no
        database setting. Pointed at an application's own database, the admin
        commands answer "not a session store" and leave it as it was.
        """
        if not create:
            _require_local_store(self.store_url)
        store = open_store(self.store_url)
        try:
            if not create:
                require_existing = getattr(store, "require_existing", None)
                if require_existing is not None:
                    require_existing()
            yield store
        finally:
            store.close()


# scheme -> the names a store at ``path`` has on disk, any of which means it exists.
# dbm's depend on its kind (gnu: the path; ndbm: .db or .pag/.dir; dumb: .dat/.dir).
_LOCAL_FILES: dict[str, tuple[str, ...]] = {
    "sqlite": ("",),
    "file": ("",),
    "dbm": ("", ".db", ".pag", ".dat", ".dir"),
}


def _require_local_store(url: str) -> None:
    """``CliError`` when ``url`` is a local store that does not exist."""
    scheme = url_scheme(url)
    suffixes = _LOCAL_FILES.get(scheme)
    if suffixes is None:
        return
    path = os.path.abspath(url_path(url))
    if any(_exists(path + suffix) for suffix in suffixes):
        return
    raise CliError(
        f"no session store at {path}: nothing was ever saved there (a {scheme}:// store is "
        "created by its first write); check --store or $SHOAL_STORE"
    )


def _exists(path: str) -> bool:
    """False only when the path is surely absent; the store reports any other failure."""
    try:
        os.stat(path)
    except FileNotFoundError:
        return False
    except OSError:
        return True  # e.g. a parent that is a file, no permission: the store says why
    return True


def _override(ctx: click.Context, param: click.Parameter, value: str | None) -> None:
    settings = ctx.find_object(Settings)  # set by the group before a subcommand parses
    if value is not None and settings is not None and param.name is not None:
        setattr(settings, param.name, value)


def store_option(command: F) -> F:
    """``--store`` after the subcommand too: ``shoal ls --store URL``."""
    return click.option(
        "--store",
        "store_url",
        metavar="URL",
        callback=_override,
        expose_value=False,
        help="Store URL (overrides the one given before the command).",
    )(command)


def store_options(command: F) -> F:
    """``--store`` and ``--app-id`` after the subcommand too."""
    command = click.option(
        "--app-id", callback=_override, expose_value=False, help="Only this application."
    )(command)
    return store_option(command)


def json_option(command: F) -> F:
    return click.option(
        "--json", "as_json", is_flag=True, help="Print machine-readable JSON instead of a table."
    )(command)


def emit_json(value: Any) -> None:
    click.echo(orjson.dumps(value, option=orjson.OPT_INDENT_2).decode())


def state_of(info: RecordInfo, now: float) -> str:
    """``live``, ``expired`` (awaiting purge) or ``invalidated`` (a tombstone)."""
    if info.invalidated:
        return "invalidated"
    return "expired" if info.expires <= now else "live"


def duration(seconds: float) -> str:
    """A short span in its largest unit, rounded down: ``42s``, ``29m``, ``5h``, ``6d``."""
    whole = int(abs(seconds))
    for unit, size in (("d", 86400), ("h", 3600), ("m", 60)):
        if whole >= size:
            return f"{whole // size}{unit}"
    return f"{whole}s"


def plural(count: int, noun: str, nouns: str | None = None) -> str:
    """``1 session``, ``2 sessions``, ``0 sessions``."""
    return f"{count} {noun if count == 1 else nouns or noun + 's'}"


def relative(when: float, now: float) -> str:
    """``in 29m`` for the future, ``3m ago`` for the past."""
    return f"in {duration(when - now)}" if when > now else f"{duration(now - when)} ago"


def new_console() -> Console:
    """A console that prints text as given: store data (app ids, keys, URLs) may
    hold ``[...]``, which rich markup would swallow or fail on."""
    return Console(markup=False)


def new_table(**options: Any) -> Table:
    """A compact table: 80 columns (the width of a pipe) hold a full ``ls`` row."""
    return Table(box=box.SIMPLE_HEAD, show_edge=False, padding=(0, 0), pad_edge=False, **options)


def local_time(when: float) -> str:
    return time.strftime("%Y-%m-%d %H:%M:%S", time.localtime(when))
