"""``shoal ls | show | rm | kill | purge | stats``: look after the sessions in a store.

Thin commands over the store contract (``records``, ``load``, ``invalidate``,
``delete``, ``purge``), like Django's ``clearsessions``. Nothing here touches
a session: an admin looking at it is not activity, so ``load`` runs without
a ``Touch`` and idle expiry does not move.
"""

from __future__ import annotations

import math
import re
import time
from dataclasses import dataclass, field
from typing import Any

import click
import orjson
from rich.pretty import Pretty
from rich.table import Table
from rich.text import Text

from .._rotation import is_pointer
from ..cluster.expiry import Announcer, purge_announcing
from ..codec import Codec, JsonCodec, decode_field, field_body, field_expiry
from ..ids import hash_id, is_well_formed, session_ref
from ..principals import drop_entries, indexed_sessions, is_index_app
from ..stores.base import Record, RecordInfo, Store
from ._common import (
    BadInput,
    CliError,
    Settings,
    emit_json,
    human_size,
    json_option,
    local_time,
    new_console,
    new_table,
    plural,
    relative,
    state_of,
    store_option,
    store_options,
)
from ._copy import copy_records
from ._progress import progress_bar

__all__ = ["COMMANDS", "copy", "kill", "ls", "migrate", "purge", "rm", "show", "stats"]

ID_PREFIX = 16  # hash characters shown by ``ls``
MIN_PREFIX = 8  # shortest hash prefix ``show``/``rm`` accept
# ``show`` decodes and pretty-prints a value whose stored bytes are at most
# this; a larger one is shown as the start of its JSON, never decoded, so a
# 20 MB value costs what a small one does (``--json`` prints every value whole).
DECODE_LIMIT = 16 * 1024
GLIMPSE = 256  # bytes of a larger value's JSON read for its one-line glimpse
_HEX = re.compile(r"[0-9a-fA-F]+")

# One raw id in 64 starts with "-" (base64url): such an argument must reach
# SESSION instead of failing as an unknown option. No short options here, so
# no letter of an id can be taken for one (``-h`` included).
ID_COMMAND: dict[str, Any] = {"ignore_unknown_options": True, "help_option_names": ["--help"]}


def _info_json(info: RecordInfo, now: float) -> dict[str, Any]:
    locked = info.locked_until is not None and info.locked_until > now
    return {
        "app_id": info.key.app_id,
        "id_hash": info.key.id_hash,
        "state": state_of(info, now),
        "version": info.version,
        "created": info.created,
        "accessed": info.accessed,
        "expires": info.expires,
        "size": info.size,
        "locked_until": info.locked_until if locked else None,
    }


def _session_records(store: Store, app_id: str | None) -> list[RecordInfo]:
    """The records of sessions: rotation pointers (``shoal._rotation``) and the
    sessions-by-user index records (``shoal.principals``) left out."""
    return [
        info
        for info in store.records(app_id)
        if not is_index_app(info.key.app_id) and not is_pointer(info.key)
    ]


def resolve(store: Store, ident: str, app_id: str | None) -> RecordInfo:
    """The one record named by a raw id, its 64-hex hash, or a hash prefix.

    A raw id is hashed first: ids are kept only as hashes. A 43-character
    hex string could be either a raw id or a prefix, so both are tried.
    """
    exact = hash_id(ident) if is_well_formed(ident) else None
    prefix = ident.lower() if _HEX.fullmatch(ident) and len(ident) >= MIN_PREFIX else None
    if exact is None and prefix is None:
        # Echo only hex (a hash prefix): anything else may be a raw id with a
        # typo, and a raw id is a live credential.
        hexed = _HEX.fullmatch(ident)
        shown = repr(ident[:ID_PREFIX]) if hexed else f"SESSION ({len(ident)} characters)"
        raise BadInput(
            f"{shown} is not a session id (43 characters), its 64-hex hash, "
            f"or a hash prefix of at least {MIN_PREFIX} hex digits"
        )
    matches = [
        info
        for info in _session_records(store, app_id)
        if info.key.id_hash == exact or (prefix and info.key.id_hash.startswith(prefix))
    ]
    where = f"app {app_id!r}" if app_id else "any app"
    # Never the raw id in a message: its hash's ref, as in logs (a 43-hex
    # argument may be a raw id or a prefix; it is named by its hash too).
    named = f"{session_ref(exact)}... (the id's hash)" if exact else f"{ident[:ID_PREFIX]}..."
    if not matches:
        raise CliError(f"no session {named} in {where} of {store.url}")
    if len(matches) > 1:
        found = ", ".join(f"{i.key.app_id}/{i.key.id_hash[:ID_PREFIX]}" for i in matches[:5])
        raise BadInput(
            f"{named} matches {len(matches)} sessions ({found}); "
            + ("give --app-id" if exact else "give more hex digits or --app-id")
        )
    return matches[0]


# -- ls -----------------------------------------------------------------------


@click.command("ls")
@store_options
@click.option("--limit", default=50, show_default=True, type=click.IntRange(min=1))
@click.option("--all", "show_all", is_flag=True, help="Include expired sessions and tombstones.")
@click.option(
    "-q", "--quiet", is_flag=True,
    help="Print only the id hash prefixes, one per line (for scripts).",
)
@click.option(
    "--principal", metavar="USER",
    help="Only the live sessions of this user (session.principal).",
)
@json_option
@click.pass_obj
def ls(
    settings: Settings,
    limit: int,
    show_all: bool,
    quiet: bool,
    principal: str | None,
    as_json: bool,
) -> None:
    """List sessions, most recently used first.

    Only live sessions, unless --all. With --principal, the live sessions
    of one user, found through the sessions-by-user index.
    """
    if quiet and as_json:
        raise BadInput("--quiet and --json each choose the output; give one of them")
    if principal is not None and show_all:
        raise BadInput("--principal lists live sessions only; drop --all")
    now = time.time()
    with settings.store() as store:
        if principal is not None:
            infos = [
                info
                for _, info in indexed_sessions(
                    store, principal, app_id=settings.app_id, now=now, codec=JsonCodec()
                )
            ]
        else:
            infos = [
                info
                for info in _session_records(store, settings.app_id)
                if show_all or state_of(info, now) == "live"
            ]
    infos.sort(key=lambda info: (info.accessed, info.created), reverse=True)
    shown = infos[:limit]
    if quiet:
        # The same prefixes the table shows, which `show` and `rm` accept.
        for info in shown:
            click.echo(info.key.id_hash[:ID_PREFIX])
        return
    if as_json:
        rows = [_info_json(info, now) for info in shown]
        if principal is not None:
            rows = [{**row, "principal": principal} for row in rows]
        emit_json(rows)
        return
    table = new_table()
    table.add_column("app")
    table.add_column("id", no_wrap=True, min_width=ID_PREFIX)
    for name in ("state", "ver", "created", "accessed", "expires", "size", "locked"):
        numeric = name in ("ver", "size")
        table.add_column(name, justify="right" if numeric else "left", no_wrap=True)
    for info in shown:
        lease = info.locked_until if info.locked_until and info.locked_until > now else None
        table.add_row(
            info.key.app_id,
            info.key.id_hash[:ID_PREFIX],
            state_of(info, now),
            str(info.version),
            relative(info.created, now),
            relative(info.accessed, now),
            relative(info.expires, now),
            human_size(info.size),
            relative(lease, now) if lease else "",
        )
    more = f", showing {len(shown)} (--limit)" if len(infos) > len(shown) else ""
    if principal is not None:
        counted = plural(len(infos), "live session") + f" of {principal!r}"
    elif show_all:
        counted = plural(len(infos), "session")
    else:
        counted = plural(len(infos), "live session") + " (--all for expired and tombstones)"
    table.caption = f"{counted} in {store.url}{more}"
    new_console().print(table)


# -- show ---------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class FieldView:
    """One stored key as an admin sees it; ``error`` when its bytes do not decode.

    ``glimpse``: the start of the JSON of a value too large to decode for a
    table (``value`` is then None); ``body``: the codec's JSON of a decoded one.
    """

    key: str
    size: int
    value: Any = None
    expires: float | None = None
    error: str | None = None
    glimpse: str | None = None
    body: bytes | None = None


def decode_fields(record: Record, codec: Codec, *, limit: int | None = None) -> list[FieldView]:
    """Every field, decoded if its stored bytes are at most ``limit`` (None: all).

    A larger field is not decoded: only its first ``GLIMPSE`` bytes are read,
    as text, so looking at a 20 MB value costs what a small one does.
    """
    views = []
    for key, data in sorted(record.fields.items()):
        try:
            if limit is not None and len(data) > limit:
                head = field_body(data, GLIMPSE).decode("utf-8", "replace")
                glimpse = "".join(c if c.isprintable() else "?" for c in head)
                views.append(FieldView(key, len(data), None, field_expiry(data), glimpse=glimpse))
                continue
            value, expires = decode_field(codec, data)
        # The bytes may come from another codec, another version or a bug: any
        # failure of this one field is shown as its raw size, never a crash.
        except Exception as exc:  # noqa: BLE001
            views.append(FieldView(key, len(data), error=f"{type(exc).__name__}: {exc}"))
        else:
            views.append(FieldView(key, len(data), value, expires, body=field_body(data)))
    return views


@click.command("show", context_settings=ID_COMMAND)
@store_options
@click.argument("session")
@json_option
@click.pass_obj
def show(settings: Settings, session: str, as_json: bool) -> None:
    """Show one session's metadata and values.

    SESSION is a raw session id, its 64-hex hash, or a unique hash prefix
    (8 hex digits or more).
    """
    now = time.time()
    codec = JsonCodec()
    with settings.store() as store:
        info = resolve(store, session, settings.app_id)
        # No touch: an admin looking is not activity.
        record = store.load(info.key, now=now).record
    limit = None if as_json else DECODE_LIMIT
    fields = decode_fields(record, codec, limit=limit) if record is not None else None
    if as_json:
        out = _info_json(info, now)
        out["fields"] = None if fields is None else [
            {
                "key": view.key,
                "size": view.size,
                "expires": view.expires,
                # The codec's own JSON as stored (tagged types stay tagged):
                # exact and lossless; it decoded, so it is valid JSON.
                "value": None if view.body is None else orjson.Fragment(view.body),
                "error": view.error,
            }
            for view in fields
        ]
        emit_json(out)
        return
    console = new_console()
    meta = Table.grid(padding=(0, 2))
    meta.add_column(style="bold")
    meta.add_column()
    meta.add_row("app", info.key.app_id)
    meta.add_row("id hash", info.key.id_hash)
    meta.add_row("state", state_of(info, now))
    meta.add_row("version", str(info.version))
    meta.add_row("created", f"{local_time(info.created)} ({relative(info.created, now)})")
    meta.add_row("accessed", f"{local_time(info.accessed)} ({relative(info.accessed, now)})")
    meta.add_row("expires", f"{local_time(info.expires)} ({relative(info.expires, now)})")
    meta.add_row("size", human_size(info.size))
    lease = info.locked_until if info.locked_until and info.locked_until > now else None
    meta.add_row("locked", f"until {relative(lease, now)}" if lease else "no")
    console.print(meta)
    if fields is None:
        why = "a tombstone keeps no data" if info.invalidated else "expired data is not loaded"
        console.print(f"\nno values: {why}")
        return
    table = new_table(title=plural(len(fields), "key"), title_justify="left")
    table.add_column("key", no_wrap=True)
    table.add_column("expires", no_wrap=True)
    table.add_column("value")
    for view in fields:
        expires = relative(view.expires, now) if view.expires is not None else ""
        if view.error is not None:
            value: Any = f"<{human_size(view.size)}, not decodable: {view.error}>"
        elif view.glimpse is not None:
            # One line, cut at the terminal's edge: the size, then the JSON's start.
            value = Text(
                f"<{human_size(view.size)}, not decoded; --json shows it whole> {view.glimpse}",
                no_wrap=True,
                overflow="ellipsis",
            )
        else:
            # Bounded even for a value just under DECODE_LIMIT: long containers
            # and strings are cut (``--json`` has them whole).
            value = Pretty(view.value, max_length=20, max_string=200)
        table.add_row(view.key, expires, value)
    console.print(table)


# -- rm -------------------------------------------------------------------------


@click.command("rm", context_settings=ID_COMMAND)
@store_options
@click.argument("session")
@click.option(
    "--hard",
    is_flag=True,
    help="Delete the record outright, tombstone included (clean-up, not logout).",
)
@json_option
@click.pass_obj
def rm(settings: Settings, session: str, hard: bool, as_json: bool) -> None:
    """End a session; its id is refused from now on.

    A tombstone is kept until the session's absolute expiry, so neither a late
    save nor a client replica can bring it back.

    SESSION is a raw session id, its 64-hex hash, or a unique hash prefix.
    """
    now = time.time()
    with settings.store() as store:
        info = resolve(store, session, settings.app_id)
        if hard:
            changed, action = store.delete(info.key), "deleted"
        else:
            changed, action = store.invalidate(info.key, now=now), "invalidated"
    label = f"{info.key.app_id}/{info.key.id_hash[:ID_PREFIX]}"
    if as_json:
        emit_json({"app_id": info.key.app_id, "id_hash": info.key.id_hash, "action": action,
                   "changed": changed, "previous_state": state_of(info, now)})
    elif changed:
        click.echo(f"{action} session {label}")
    else:
        click.echo(
            f"session {label} was already {state_of(info, now)}; nothing to do "
            "(--hard deletes the record)"
        )


# -- kill -----------------------------------------------------------------------


@click.command("kill")
@store_options
@click.option(
    "--principal", metavar="USER", required=True,
    help="End every live session of this user (session.principal).",
)
@json_option
@click.pass_obj
def kill(settings: Settings, principal: str, as_json: bool) -> None:
    """Log a user out everywhere: end every live session of --principal.

    As the application's ``manager.invalidate_all(user)``: each session gets
    a tombstone, so no node and no replica brings it back. Every application
    of the store, unless --app-id.
    """
    now = time.time()
    ended: list[RecordInfo] = []
    with settings.store() as store:
        found = indexed_sessions(store, principal, app_id=settings.app_id, now=now,
                                 codec=JsonCodec())  # fmt: skip
        by_index: dict[Any, list[str]] = {}
        for index, info in found:
            if store.invalidate(info.key, now=now):
                ended.append(info)
            by_index.setdefault(index, []).append(info.key.id_hash)
        for index, hashes in by_index.items():
            drop_entries(store, index, hashes, now=now)
    if as_json:
        emit_json({
            "principal": principal,
            "ended": len(ended),
            "sessions": [{"app_id": i.key.app_id, "id_hash": i.key.id_hash} for i in ended],
        })  # fmt: skip
    else:
        where = f"app {settings.app_id!r}" if settings.app_id else "every app"
        click.echo(f"ended {plural(len(ended), 'session')} of {principal!r} in {where} "
                   f"of {store.url}")  # fmt: skip


# -- purge ----------------------------------------------------------------------


@click.command("purge")
@store_option
@click.option(
    "--grace",
    default=120.0,
    show_default=True,
    type=click.FloatRange(min=0),
    help="Seconds a record must have been expired (longer than any request).",
)
@click.option("--batch", default=1000, show_default=True, type=click.IntRange(min=1))
@click.option(
    "--node-id",
    default=None,
    help="This purge's node id in the expired events (default: host-pid-suffix).",
)
@json_option
@click.pass_obj
def purge(
    settings: Settings, grace: float, batch: int, node_id: str | None, as_json: bool
) -> None:
    """Delete records expired for longer than --grace.

    Sessions and tombstones of every application. Runs in bounded batches, each its own short transaction, so live traffic
    is never blocked for long. Where the store has an events channel, each
    ended session is announced once (an ``expired`` event with its values,
    from this node) to the listeners of every app node.
    """
    if settings.app_id is not None:
        raise BadInput("purge works on every application of the store at once; drop --app-id")
    now = time.time()  # fixed: records that expire meanwhile wait for the next run
    total = batches = 0
    with settings.store() as store, progress_bar(quiet=as_json) as bar:
        announcer = Announcer(store, node_id)
        # The bar's total is counted first (a scan); with --json there is no bar and no scan.
        due = None if bar.disable else sum(
            1 for info in store.records() if info.expires + grace <= now
        )
        task = bar.add_task("purging", total=due)
        try:
            # Terminates: with ``now`` fixed the purgeable set only shrinks.
            while True:
                deleted = purge_announcing(
                    store, now=now, grace=grace, limit=batch, hub_for=announcer.hub_for
                )
                total, batches = total + deleted, batches + 1
                bar.update(task, advance=deleted)
                if deleted < batch:
                    break
        finally:
            announced = announcer.sent
            announcer.close()
    if as_json:
        emit_json({"purged": total, "batches": batches, "grace": grace, "announced": announced})
    else:
        records = "record" if total == 1 else "records"
        click.echo(f"purged {total} {records} expired more than {grace:g}s ago from {store.url}")


# -- copy -----------------------------------------------------------------------


@click.command("copy")
@click.option("--from", "source_url", metavar="URL", required=True, help="The store to copy.")
@click.option(
    "--to", "target_url", metavar="URL", required=True,
    help="The store to fill (created if need be).",
)
@click.option("--app-id", help="Only this application (default: every one).")
@click.option(
    "--max-passes", default=10, show_default=True, type=click.IntRange(min=1),
    help="Passes before giving up on a store that never goes quiet.",
)
@json_option
@click.pass_obj
def copy(
    settings: Settings,
    source_url: str,
    target_url: str,
    app_id: str | None,
    max_passes: int,
    as_json: bool,
) -> None:
    """Copy every live session and tombstone to another store, safe while the app serves.

    Runs passes until one copies nothing: a session changed during the copy
    is copied again and ends up with its newest version on the target. A
    record the application already wrote on the target is kept. Switch the
    application to the target, then run the copy once more to bring over
    what changed on the source in between.
    """
    if source_url == target_url:
        raise BadInput("--from and --to name the same store; give two stores")
    chosen = app_id if app_id is not None else settings.app_id
    source_settings = Settings(store_url=source_url, app_id=chosen)
    target_settings = Settings(store_url=target_url, app_id=chosen)
    with (
        source_settings.store() as source,
        target_settings.store(create=True) as target,
        progress_bar(quiet=as_json) as bar,
    ):
        task = bar.add_task("copying", total=None)

        def on_pass(number: int, records: int) -> None:
            bar.reset(task, total=records, description=f"copying, pass {number}")

        report = copy_records(
            source, target, app_id=chosen, max_passes=max_passes,
            on_pass=on_pass, on_record=lambda: bar.advance(task),
        )  # fmt: skip
    if as_json:
        emit_json({"from": source.url, "to": target.url, **{
            name: getattr(report, name) for name in report.__dataclass_fields__
        }})  # fmt: skip
        return
    click.echo(
        f"copied {plural(report.copied, 'session')}"
        + (f", {plural(report.index, 'user index record')}" if report.index else "")
        + f" and {plural(report.ended, 'tombstone')} "
        f"from {source.url} to {target.url} in {plural(report.passes, 'pass', 'passes')}"
        + (f"; kept {report.target_newer} newer on the target" if report.target_newer else "")
    )
    if not report.settled:
        click.echo(f"the source kept changing for {max_passes} passes: run shoal copy again")


# -- migrate --------------------------------------------------------------------


@click.command("migrate")
@store_option
@json_option
@click.pass_obj
def migrate(settings: Settings, as_json: bool) -> None:
    """Create the store's tables and indexes now, instead of on first use.

    For deployments whose application database user may not run DDL: run it
    once with a user that may. Safe to repeat and to run concurrently. Stores
    without a schema (memory, file, dbm, Redis) have nothing to do.
    """
    with settings.store(create=True) as store:
        create = getattr(store, "migrate", None)
        if create is not None:
            create()
    done = create is not None
    if as_json:
        emit_json({"store": store.url, "migrated": done})
    elif done:
        click.echo(f"the schema of {store.url} is in place")
    else:
        click.echo(f"nothing to migrate: {store.url} needs no schema")


# -- stats ----------------------------------------------------------------------


@dataclass(slots=True)
class AppStats:
    app_id: str
    live: int = 0
    expired: int = 0
    invalidated: int = 0
    bytes: int = 0
    oldest_access: float | None = None  # of live sessions
    newest_access: float | None = None
    expiring_soon: int = 0  # live sessions that end within ``soon`` seconds
    sizes: list[int] = field(default_factory=list)  # of live sessions

    def add(self, info: RecordInfo, now: float, soon: float) -> None:
        state = state_of(info, now)
        setattr(self, state, getattr(self, state) + 1)
        self.bytes += info.size
        if state == "live":
            self.sizes.append(info.size)
            if info.expires <= now + soon:
                self.expiring_soon += 1
            seen = info.accessed
            if self.oldest_access is None or seen < self.oldest_access:
                self.oldest_access = seen
            if self.newest_access is None or seen > self.newest_access:
                self.newest_access = seen


def size_distribution(sizes: list[int]) -> dict[str, int | None]:
    """Nearest-rank percentiles of session sizes in bytes (None without sessions)."""
    ordered = sorted(sizes)

    def rank(p: float) -> int | None:
        return ordered[max(0, math.ceil(p * len(ordered)) - 1)] if ordered else None

    return {"p50": rank(0.5), "p90": rank(0.9), "p99": rank(0.99),
            "max": ordered[-1] if ordered else None}  # fmt: skip


def _size_or_blank(size: int | None) -> str:
    return "" if size is None else human_size(size)


@click.command("stats")
@store_options
@click.option(
    "--soon", default=300.0, show_default=True, type=click.FloatRange(min=0),
    help="Seconds within which a live session counts as expiring soon.",
)
@json_option
@click.pass_obj
def stats(settings: Settings, soon: float, as_json: bool) -> None:
    """Session counts and sizes per application.

    Live, expired (awaiting purge) and invalidated records, their bytes, the
    size distribution of the live ones (median, 90th and 99th percentile,
    largest), how many expire within --soon seconds, and the oldest and
    newest access.
    """
    now = time.time()
    per_app: dict[str, AppStats] = {}
    with settings.store() as store:
        for info in _session_records(store, settings.app_id):
            app = info.key.app_id
            per_app.setdefault(app, AppStats(app)).add(info, now, soon)
    rows = [per_app[app] for app in sorted(per_app)]
    if as_json:
        out = []
        for row in rows:
            data = {name: getattr(row, name) for name in AppStats.__dataclass_fields__}
            data["size_distribution"] = size_distribution(data.pop("sizes"))
            data["soon"] = soon
            out.append(data)
        emit_json(out)
        return
    table = new_table(caption=f"{store.url}; soon: within {soon:g}s")
    table.add_column("app")
    for name in ("live", "expired", "invalidated", "size", "p50", "p90", "max", "soon"):
        table.add_column(name, justify="right")
    table.add_column("oldest access")
    table.add_column("newest access")
    for row in rows:
        dist = size_distribution(row.sizes)
        table.add_row(
            row.app_id,
            str(row.live),
            str(row.expired),
            str(row.invalidated),
            human_size(row.bytes),
            *(_size_or_blank(dist[k]) for k in ("p50", "p90", "max")),
            str(row.expiring_soon),
            relative(row.oldest_access, now) if row.oldest_access is not None else "",
            relative(row.newest_access, now) if row.newest_access is not None else "",
        )
    new_console().print(table)


COMMANDS = (ls, show, rm, kill, purge, stats, copy, migrate)
