"""Every SQL statement of the SQL stores, each with its header.

SQLite first, then PostgreSQL and MySQL/MariaDB, each section with its own
notes on atomicity and round trips.
"""

from __future__ import annotations

__all__ = [
    "MYSQL_BEGIN_SELECT_FOR_UPDATE",
    "MYSQL_COMMIT",
    "MYSQL_DELETE",
    "MYSQL_DELETE_COMMIT",
    "MYSQL_INSERT",
    "MYSQL_LIST",
    "MYSQL_PURGE",
    "MYSQL_ROLLBACK",
    "MYSQL_SCHEMA",
    "MYSQL_SELECT",
    "MYSQL_TABLE_EXISTS",
    "MYSQL_UPDATE_COMMIT",
    "PG_APPLY",
    "PG_APPLY_CONFLICTS",
    "PG_APPLY_FIELDS_MERGE",
    "PG_APPLY_FIELDS_REPLACE",
    "PG_APPLY_NO_CONFLICTS",
    "PG_CREATE",
    "PG_DELETE",
    "PG_INVALIDATE",
    "PG_LIST",
    "PG_LOAD_LOCK",
    "PG_MIGRATE_LOCK",
    "PG_PURGE",
    "PG_RENEW",
    "PG_SAVE",
    "PG_SAVE_EXPECT",
    "PG_SAVE_FENCED",
    "PG_SAVE_FIELDS_MERGE",
    "PG_SAVE_FIELDS_MERGE_DELETE",
    "PG_SAVE_FIELDS_REPLACE",
    "PG_SAVE_NOTIFY",
    "PG_SAVE_RELEASE",
    "PG_SAVE_VERSION",
    "PG_SCHEMA",
    "PG_SELECT",
    "PG_TABLE_EXISTS",
    "PG_TAKE",
    "PG_TAKE_TOUCH",
    "PG_TOUCH",
    "PG_UNLOCK",
    "SQLITE_ADD_PURGE_AFTER",
    "SQLITE_ADD_REVISION",
    "SQLITE_CHECK",
    "SQLITE_COLUMNS",
    "SQLITE_DELETE",
    "SQLITE_INDEXES",
    "SQLITE_INSERT",
    "SQLITE_LAYOUT",
    "SQLITE_LIST",
    "SQLITE_PURGE",
    "SQLITE_PURGE_RETURNING",
    "SQLITE_SAVE",
    "SQLITE_SAVE_LEASE",
    "SQLITE_SAVE_META",
    "SQLITE_SAVE_META_PURGE",
    "SQLITE_SAVE_PURGE",
    "SQLITE_SCHEMA",
    "SQLITE_SELECT",
    "SQLITE_TABLE_EXISTS",
]

# Schema: one row per session. ``fields`` is the packed field map (see
# state.pack_fields); metadata stays in columns. WITHOUT ROWID: the key is
# the row. ``revision`` names one incarnation of a key: drawn at random
# (odd, never 0) when the row is inserted and never changed by a write, so a
# session deleted and created again under the same key is a different row to
# a compare-and-set even when its version and times are the same (see
# SQLITE_SAVE). ``purge_after`` is a lower bound of ``expires`` that the
# store rewrites only when ``expires`` fell below it or passed it by more
# than a slack (sqlite._PURGE_SLACK), and purge finds rows through ITS index
# (SQLITE_INDEXES): an index on ``expires`` itself was rewritten by every
# save, which slides ``expires``. Rows of a database made before a column
# existed hold its default, 0 (both are valid: no incarnation, a lower bound).
SQLITE_SCHEMA = (
    """
    CREATE TABLE IF NOT EXISTS shoal_sessions (
        app_id TEXT NOT NULL,
        id_hash TEXT NOT NULL,
        version INTEGER NOT NULL,
        created REAL NOT NULL,
        accessed REAL NOT NULL,
        expires REAL NOT NULL,
        absolute_expires REAL NOT NULL,
        invalidated INTEGER NOT NULL DEFAULT 0,
        lease_token TEXT,
        lease_until REAL NOT NULL DEFAULT 0,
        fields BLOB NOT NULL,
        revision INTEGER NOT NULL DEFAULT 0,
        purge_after REAL NOT NULL DEFAULT 0,
        PRIMARY KEY (app_id, id_hash)
    ) WITHOUT ROWID
    """,
)

# After SQLITE_SCHEMA and the migration, in the same BEGIN IMMEDIATE, on
# every new connection: the index purge reads, and the DROP of the index the
# first layouts kept on ``expires`` (a process still on the old code
# creates it again when it opens a connection, during a rolling restart;
# the next connection of the new code drops it again).
SQLITE_INDEXES = (
    "DROP INDEX IF EXISTS shoal_sessions_expires",
    "CREATE INDEX IF NOT EXISTS shoal_sessions_purge ON shoal_sessions (purge_after)",
)

# In: none. Out: the names among ``revision`` and ``purge_after`` that
# shoal_sessions has (a table of an older layout lacks one or both). A
# catalog read, once per connection.
SQLITE_LAYOUT = (
    "SELECT name FROM pragma_table_info('shoal_sessions')"
    " WHERE name IN ('revision', 'purge_after')"
)

# The migrations from the older layouts, run inside the caller's BEGIN
# IMMEDIATE for each column SQLITE_LAYOUT did not name, so of several
# processes opening the old database together one migrates it. SQLite adds a
# column with a constant default without rewriting the table; ``purge_after``
# is then filled from ``expires`` (one pass over the table, once) so purge
# does not look at every old row again each time. Processes still running the
# old code keep working: their statements name their columns, a row they
# insert gets revision 0 and purge_after 0 (a valid lower bound), and their
# purge scans the table while the old index is gone.
SQLITE_ADD_REVISION = (
    "ALTER TABLE shoal_sessions ADD COLUMN revision INTEGER NOT NULL DEFAULT 0",
)
SQLITE_ADD_PURGE_AFTER = (
    "ALTER TABLE shoal_sessions ADD COLUMN purge_after REAL NOT NULL DEFAULT 0",
    "UPDATE shoal_sessions SET purge_after = expires",
)

# In: none. Out: one row, 1 if the session table exists, else 0. A catalog
# read (no lock beyond a read), for a store that must not create its schema
# (SQLiteStore.require_existing); fails on a file that is no database.
SQLITE_TABLE_EXISTS = (
    "SELECT count(*) FROM sqlite_master WHERE type = 'table' AND name = 'shoal_sessions'"
)

# The columns of a row as the store reads them. The first six are the row's
# CHECK (SQLITE_CHECK): what SQLITE_SAVE compares.
_COLUMNS = (
    "revision, version, accessed, expires, lease_token, lease_until, "
    "created, absolute_expires, invalidated, purge_after, fields"
)

SQLITE_COLUMNS = tuple(_COLUMNS.split(", "))
"""The names of _COLUMNS, in order (the columns of a row the store reads)."""

SQLITE_CHECK = 6
"""How many leading _COLUMNS a compare-and-set compares (revision .. lease_until)."""

# In: app_id, id_hash. Out: one row of _COLUMNS or none. A plain read.
SQLITE_SELECT = f"SELECT {_COLUMNS} FROM shoal_sessions WHERE app_id = ? AND id_hash = ?"

# The WHERE of every compare-and-set below. In: app_id, id_hash, then the
# old CHECK: revision, version, accessed, expires, lease_token, lease_until.
_CAS = """
    WHERE app_id = ? AND id_hash = ? AND revision = ? AND version = ? AND accessed = ?
      AND expires = ? AND lease_token IS ? AND lease_until = ?
"""

# The compare-and-set of every write onto an existing row, in ONE autocommit
# statement (or inside the store's BEGIN IMMEDIATE, on the row it just read).
# In: version, accessed, expires, lease_token, lease_until, created,
# absolute_expires, invalidated, fields (the new values), then _CAS's. Out:
# rowcount 1 when written, 0 when the row is gone or its check changed.
# Atomicity: a write statement takes SQLite's write lock before it reads, so
# nothing runs between the check and the write; when the check still holds,
# the row is the one the store ran the pure step on, so the write is the
# step run atomically. Why these six columns and not the whole row and blob
# (rejected: binding and comparing the blob costs more than the write):
# every step that changes ``fields`` or ``invalidated`` bumps ``version``
# (apply, invalidate); a touch changes ``accessed`` and ``expires``; a lease,
# its renewal and its release change ``lease_token`` or ``lease_until``;
# ``created`` and ``absolute_expires`` never change in one incarnation;
# ``purge_after`` changes only with ``expires``; and ``revision`` tells
# incarnations apart, which a version compare alone cannot (deleted and
# created again: version 1 again, with the same times under a coarse or
# frozen clock). REAL columns compare exactly (the store binds the floats it
# read or wrote).
SQLITE_SAVE = (
    """
    UPDATE shoal_sessions SET version = ?, accessed = ?, expires = ?, lease_token = ?,
        lease_until = ?, created = ?, absolute_expires = ?, invalidated = ?, fields = ?
    """
    + _CAS
)

# SQLITE_SAVE that also moves ``purge_after`` (to the new ``expires``): for a
# write whose ``expires`` left the slack above the old ``purge_after``. In:
# SQLITE_SAVE's new values, purge_after, then _CAS's. Out and atomicity as
# SQLITE_SAVE.
SQLITE_SAVE_PURGE = (
    """
    UPDATE shoal_sessions SET version = ?, accessed = ?, expires = ?, lease_token = ?,
        lease_until = ?, created = ?, absolute_expires = ?, invalidated = ?, fields = ?,
        purge_after = ?
    """
    + _CAS
)

# SQLITE_SAVE for a write that leaves the fields and the tombstone flag as
# they are (a touch, a lease taken with it): the blob is not sent. In:
# version, accessed, expires, lease_token, lease_until, then _CAS's. Out and
# atomicity as SQLITE_SAVE.
SQLITE_SAVE_META = (
    """
    UPDATE shoal_sessions SET version = ?, accessed = ?, expires = ?, lease_token = ?,
        lease_until = ?
    """
    + _CAS
)

# SQLITE_SAVE_META that also moves ``purge_after``, as SQLITE_SAVE_PURGE. In:
# SQLITE_SAVE_META's new values, purge_after, then _CAS's.
SQLITE_SAVE_META_PURGE = (
    """
    UPDATE shoal_sessions SET version = ?, accessed = ?, expires = ?, lease_token = ?,
        lease_until = ?, purge_after = ?
    """
    + _CAS
)

# SQLITE_SAVE for a write that changes the lease alone (taken or kept by a
# load that is not due a touch, renewed, freed by unlock): neither the times
# nor the blob are set. SQLite rewrites an index entry for every indexed
# column a SET names, changed or not, so the statements name ``purge_after``
# only when it moves. In: lease_token, lease_until, then _CAS's. Out and
# atomicity as SQLITE_SAVE.
SQLITE_SAVE_LEASE = "UPDATE shoal_sessions SET lease_token = ?, lease_until = ?" + _CAS

# In: app_id, id_hash, then _COLUMNS in order (a new random revision,
# purge_after = expires). Out: rowcount 1 when inserted, 0 when any row
# (live, expired or tombstone) already holds the key. The compare-and-set of
# an absent row (create_step), in one autocommit statement.
SQLITE_INSERT = f"""
    INSERT INTO shoal_sessions (app_id, id_hash, {_COLUMNS})
    VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)
    ON CONFLICT (app_id, id_hash) DO NOTHING
"""

# In: app_id, id_hash. Removes the row; inside the caller's transaction.
SQLITE_DELETE = "DELETE FROM shoal_sessions WHERE app_id = ? AND id_hash = ?"

# In: app_id or NULL (twice). Out: app_id, id_hash, _COLUMNS for every row.
SQLITE_LIST = f"""
    SELECT app_id, id_hash, {_COLUMNS} FROM shoal_sessions
    WHERE (? IS NULL OR app_id = ?) ORDER BY accessed DESC
"""

# The rows a purge deletes: at most ``limit`` rows expired before the cutoff,
# found through the index on ``purge_after`` (<= ``expires``, so every such
# row has purge_after <= cutoff; a row within the slack above the cutoff is
# looked at and passed over). The outer WHERE re-checks expiry on the row
# being deleted, in the same statement, so a save that extended the row
# after the inner SELECT saw it keeps the row. In: cutoff (now - grace),
# cutoff, batch limit, cutoff.
_PURGE = """
    DELETE FROM shoal_sessions
    WHERE (app_id, id_hash) IN (
        SELECT app_id, id_hash FROM shoal_sessions
        WHERE purge_after <= ? AND expires <= ? LIMIT ?
    ) AND expires <= ?
"""

# In: as _PURGE. Out: rowcount, the rows deleted.
SQLITE_PURGE = _PURGE

# In: as _PURGE. Out: (app_id, id_hash, invalidated, fields blob) per deleted
# row, in the same statement (SQLite >= 3.35): the ``expired`` event carries
# the ended session's values, and a save landing between a read and a
# delete would otherwise be announced with old values (see
# cluster/_statements.py).
SQLITE_PURGE_RETURNING = _PURGE + "    RETURNING app_id, id_hash, invalidated, fields\n"


# ---------------------------------------------------------------------------
# PostgreSQL (stores/postgresql.py)
#
# Templates: ``{table}``, ``{index}``, ``{lock_key}`` and ``{channel}`` (the
# NOTIFY channel, as a string literal; payload ``app_id:id_hash``) are filled
# once per store from a validated name (see postgresql._Statements);
# parameters are psycopg's ``%(name)s``. Every statement runs on an
# autocommit connection, so each is its own transaction and ONE round trip.
# Literal braces are avoided (``jsonb_build_object()`` for ``{}``) because the
# templates go through ``str.format``.
#
# Fields live in one jsonb map: key -> {"v": version, "d": base64 of the bytes}
# (keys holding U+0000 are escaped by the store, jsonb cannot hold them). A
# save therefore changes only the keys it names, inside SQL, without sending
# or reading the rest of the session. Rejected: a bytea blob (the packed map
# of SQLite) would need a read-modify-write round trip per save; a row per
# key would make every save a multi-row transaction.
#
# Row-level atomicity: every check-then-write statement either takes the row
# with SELECT ... FOR UPDATE in its first CTE and writes it in a later CTE of
# the SAME statement, or is a single UPDATE/DELETE whose WHERE holds the
# whole check. Under READ COMMITTED a concurrent writer makes either form
# wait for the row and re-evaluate on the newest version, so no write is
# ever computed from a stale row.
# ---------------------------------------------------------------------------

PG_SCHEMA = (
    """
    CREATE TABLE IF NOT EXISTS {table} (
        app_id text NOT NULL,
        id_hash text NOT NULL,
        version bigint NOT NULL,
        created double precision NOT NULL,
        accessed double precision NOT NULL,
        expires double precision NOT NULL,
        absolute_expires double precision NOT NULL,
        invalidated boolean NOT NULL DEFAULT false,
        lease_token text,
        lease_until double precision NOT NULL DEFAULT 0,
        fields jsonb NOT NULL,
        PRIMARY KEY (app_id, id_hash)
    )
    """,
    "CREATE INDEX IF NOT EXISTS {index} ON {table} (expires)",
)

# In: none ({lock_key} is a literal bigint derived from the table name).
# Taken inside the migration transaction, before PG_SCHEMA: two processes
# creating the table at the same moment would otherwise race in the catalog
# ("duplicate key value violates unique constraint pg_type_typname_nsp_index",
# which IF NOT EXISTS does not prevent). Released at COMMIT.
PG_MIGRATE_LOCK = "SELECT pg_advisory_xact_lock({lock_key})"

# In: table (the quoted name as text). Out: one boolean. A catalog read, run
# once per process before the first operation so an existing table costs no DDL.
PG_TABLE_EXISTS = "SELECT to_regclass(%(table)s) IS NOT NULL"

_PG_COLUMNS = (
    "version, created, accessed, expires, absolute_expires, "
    "invalidated, lease_token, lease_until, fields::text"
)

_PG_T_COLUMNS = ", ".join("t." + column for column in _PG_COLUMNS.split(", "))

# In: app_id, id_hash. Out: one row of _PG_COLUMNS or none. A plain read, no
# lock: this is the whole of a load that needs no lease and no touch.
PG_SELECT = (
    f"SELECT {_PG_COLUMNS} FROM {{table}} WHERE app_id = %(app_id)s AND id_hash = %(id_hash)s"
)

# In: app_id, id_hash, now, idle, before (touch when accessed < before).
# Out: (touched, _PG_COLUMNS...) — the touched row, or the row as it is when
# the touch did not apply (someone else touched, saved or ended it first);
# none when the row is gone. Used only after PG_SELECT found a touch due, so
# it runs at most once per touch interval per session. The UPDATE's WHERE
# restates load_step: live (not a tombstone, not expired) and still due.
PG_TOUCH = f"""
    WITH touched AS (
        UPDATE {{table}}
        SET accessed = %(now)s::float8,
            expires = LEAST(%(now)s::float8 + %(idle)s::float8, absolute_expires)
        WHERE app_id = %(app_id)s AND id_hash = %(id_hash)s
          AND NOT invalidated AND expires > %(now)s::float8
          AND accessed < %(before)s::float8
        RETURNING {_PG_COLUMNS}
    )
    SELECT true, * FROM touched
    UNION ALL
    SELECT false, {_PG_COLUMNS} FROM {{table}}
    WHERE app_id = %(app_id)s AND id_hash = %(id_hash)s
      AND NOT EXISTS (SELECT 1 FROM touched)
"""

# In: app_id, id_hash, now, token, lease, before and idle (both NULL: no
# touch). Out: none when absent; else (status, holder_until, _PG_COLUMNS...)
# with status 'invalidated' | 'expired' | 'locked' | 'loaded'; the columns
# are the row after the lease was taken (and the touch done) when 'loaded',
# NULL otherwise; holder_until is the other holder's lease end when 'locked'.
# Atomicity: the row is locked (FOR UPDATE) by the first CTE and written by
# the third, in one statement. Restates load_step: a tombstone or an expired
# row is reported, never leased; another token's live lease refuses the
# lock; the caller's own lease is re-entrant and extended. Sent only after
# PG_TAKE took nothing, to say why (or to take the lease, if it came free).
PG_LOAD_LOCK = f"""
    WITH cur AS (
        SELECT * FROM {{table}}
        WHERE app_id = %(app_id)s AND id_hash = %(id_hash)s
        FOR UPDATE
    ), verdict AS (
        SELECT cur.app_id, cur.id_hash, cur.lease_until AS holder_until,
            CASE
                WHEN cur.invalidated THEN 'invalidated'
                WHEN cur.expires <= %(now)s::float8 THEN 'expired'
                WHEN cur.lease_token IS NOT NULL AND cur.lease_token <> %(token)s::text
                     AND cur.lease_until > %(now)s::float8 THEN 'locked'
                ELSE 'loaded'
            END AS status,
            COALESCE(cur.accessed < %(before)s::float8, false) AS due
        FROM cur
    ), taken AS (
        UPDATE {{table}} AS t
        SET accessed = CASE WHEN v.due THEN %(now)s::float8 ELSE t.accessed END,
            expires = CASE
                WHEN v.due THEN LEAST(%(now)s::float8 + %(idle)s::float8, t.absolute_expires)
                ELSE t.expires END,
            lease_token = %(token)s::text,
            lease_until = %(now)s::float8 + %(lease)s::float8
        FROM verdict AS v
        WHERE t.app_id = v.app_id AND t.id_hash = v.id_hash AND v.status = 'loaded'
        RETURNING {_PG_T_COLUMNS}
    )
    SELECT v.status, v.holder_until, taken.* FROM verdict AS v LEFT JOIN taken ON true
"""

# A locking load as it almost always goes: ONE plain UPDATE that takes the
# lease (and does a due touch) on a live row whose lease is free or already
# the caller's. In: app_id, id_hash, now, token, lease; with {touch}
# (PG_TAKE_TOUCH) also before and idle. Out: _PG_COLUMNS of the row after
# the write; NO row when the row is absent, a tombstone, expired or leased
# to another live token, and then the store sends PG_LOAD_LOCK, which says
# which (or takes the lease, if it became free meanwhile). Atomicity: one
# UPDATE; under READ COMMITTED its WHERE is re-evaluated on the newest row
# version. Restates load_step as PG_LOAD_LOCK does, without the FOR UPDATE
# CTE, the verdict and the join that only a refused load needs.
PG_TAKE = f"""
    UPDATE {{table}} AS c
    SET lease_token = %(token)s::text,
        lease_until = %(now)s::float8 + %(lease)s::float8{{touch}}
    WHERE c.app_id = %(app_id)s AND c.id_hash = %(id_hash)s
      AND NOT c.invalidated AND c.expires > %(now)s::float8
      AND (c.lease_token IS NULL OR c.lease_token = %(token)s::text
           OR c.lease_until <= %(now)s::float8)
    RETURNING {_PG_COLUMNS}
"""

# {touch} of PG_TAKE when the load asks for a touch: done when the last
# access is older than ``before`` (the SET reads the row before the update).
PG_TAKE_TOUCH = """,
        accessed = CASE WHEN c.accessed < %(before)s::float8 THEN %(now)s::float8
                        ELSE c.accessed END,
        expires = CASE WHEN c.accessed < %(before)s::float8
                       THEN LEAST(%(now)s::float8 + %(idle)s::float8, c.absolute_expires)
                       ELSE c.expires END"""

# In: app_id, id_hash, created, now, expires, absolute, token and until
# (NULL and 0 without a lease), fields (jsonb text: key -> {"v": 1, "d": ...}).
# Out: one row when created, none when any record (live, expired, tombstone)
# already holds the key. Atomic: the primary key decides (create_step).
PG_CREATE = """
    INSERT INTO {table} (app_id, id_hash, version, created, accessed, expires,
                         absolute_expires, invalidated, lease_token, lease_until, fields)
    VALUES (%(app_id)s, %(id_hash)s, 1, %(created)s::float8, %(now)s::float8,
            %(expires)s::float8, %(absolute)s::float8, false, %(token)s::text,
            %(until)s::float8, %(fields)s::jsonb)
    ON CONFLICT (app_id, id_hash) DO NOTHING
    RETURNING 1
"""

# In: app_id, id_hash, now, idle, set (jsonb text: key -> base64), delete
# (text[]), expect_version (bigint or NULL), expect_fields (jsonb text: key ->
# version or null), token (or NULL), release (bool).
# Out: none when the row is absent (GONE); else (status, conflicts, version)
# with status 'gone' | 'lock_lost' | 'conflict' | 'ok', conflicts the keys
# whose version differed (text[]), version the new record version when 'ok'.
# Atomicity: FOR UPDATE in ``cur``, the checks in ``checked``, the write in
# ``written`` and the NOTIFY (delivered at commit, only for an 'ok' release)
# are one statement. Restates apply_step in its order: gone (tombstone or
# expired) > lease fencing > record version (LOCK_LOST under a lease,
# CONFLICT otherwise) > per-key versions. The write bumps the version,
# writes the fields ({fields}: one of the two below), resets idle expiry,
# and frees the lease on release. The store renders four variants (merge or
# replace, with or without per-key expectations) so a save pays only for
# what it asks: a merge without expectations does no jsonb_each of them.
# Sent only after PG_SAVE wrote nothing, to say why (it also writes when the
# row changed in between in a way that now lets the save through).
PG_APPLY = """
    WITH cur AS (
        SELECT * FROM {table}
        WHERE app_id = %(app_id)s AND id_hash = %(id_hash)s
        FOR UPDATE
    ), checked AS (
        SELECT cur.*, v.conflicts,
            CASE
                WHEN cur.invalidated OR cur.expires <= %(now)s::float8 THEN 'gone'
                WHEN %(token)s::text IS NOT NULL
                     AND NOT (cur.lease_token IS NOT DISTINCT FROM %(token)s::text
                              AND cur.lease_until > %(now)s::float8) THEN 'lock_lost'
                WHEN %(expect_version)s::bigint IS NOT NULL
                     AND cur.version <> %(expect_version)s::bigint THEN
                    CASE WHEN %(token)s::text <> '' THEN 'lock_lost' ELSE 'conflict' END
                WHEN cardinality(v.conflicts) > 0 THEN 'conflict'
                ELSE 'ok'
            END AS status
        FROM cur CROSS JOIN LATERAL (SELECT {conflicts} AS conflicts) AS v
    ), written AS (
        UPDATE {table} AS t
        SET version = c.version + 1,
            fields = {fields},
            accessed = %(now)s::float8,
            expires = LEAST(%(now)s::float8 + %(idle)s::float8, c.absolute_expires),
            lease_token = CASE WHEN %(release)s::boolean THEN NULL ELSE c.lease_token END,
            lease_until = CASE WHEN %(release)s::boolean THEN 0 ELSE c.lease_until END
        FROM checked AS c
        WHERE t.app_id = c.app_id AND t.id_hash = c.id_hash AND c.status = 'ok'
        RETURNING t.version
    )
    SELECT c.status, c.conflicts, w.version,
        CASE WHEN w.version IS NOT NULL AND %(release)s::boolean
             THEN pg_notify({channel}, %(app_id)s || ':' || %(id_hash)s) END
    FROM checked AS c LEFT JOIN written AS w ON true
"""

# The set keys (%(set)s: key -> base64) as field entries of the new version
# of row ``c``; an empty object when there are none.
_PG_SET_KEYS = """COALESCE((
        SELECT jsonb_object_agg(s.key, jsonb_build_object('v', c.version + 1, 'd', s.value))
        FROM jsonb_each(%(set)s::jsonb) AS s), jsonb_build_object())"""

# {fields} of a merge: the deleted keys go, then the set keys are written
# with the new version (set wins over delete, as in apply_step).
PG_APPLY_FIELDS_MERGE = "c.fields - %(delete)s::text[] || " + _PG_SET_KEYS

# {fields} of a replace: only the set keys remain; a key whose bytes did not
# change keeps its version (a whole-record write is not a change of it).
PG_APPLY_FIELDS_REPLACE = """COALESCE((
        SELECT jsonb_object_agg(s.key, jsonb_build_object(
            'v', CASE WHEN (c.fields -> s.key -> 'd') = s.value THEN c.fields -> s.key -> 'v'
                      ELSE to_jsonb(c.version + 1) END,
            'd', s.value))
        FROM jsonb_each(%(set)s::jsonb) AS s), jsonb_build_object())"""

# {conflicts} with per-key expectations: the keys whose stored version
# differs from the one seen (null = the key was absent).
PG_APPLY_CONFLICTS = """ARRAY(
            SELECT e.key FROM jsonb_each(%(expect_fields)s::jsonb) AS e
            WHERE (cur.fields -> e.key -> 'v') IS DISTINCT FROM NULLIF(e.value, 'null'::jsonb))"""

# {conflicts} without expectations.
PG_APPLY_NO_CONFLICTS = "ARRAY[]::text[]"

# The save as it almost always goes: ONE plain UPDATE of the row by its key,
# whose WHERE holds every check of apply_step and whose SET is the write.
# In: app_id, id_hash, now, idle, set (jsonb text: key -> base64), and as
# the store's variant needs them: delete (text[]), token, expect_version,
# expect_fields (as for PG_APPLY). Out: (version,) — the new version — when
# written; NO row when any check failed or the row is absent, and then the
# store sends PG_APPLY, which says why (or writes, if the row changed back
# meanwhile). The store renders the variant a save needs (see
# postgresql._Statements.save) from these pieces:
#   {fields}: PG_SAVE_FIELDS_MERGE, PG_SAVE_FIELDS_MERGE_DELETE or
#             PG_SAVE_FIELDS_REPLACE;
#   {lease}:  PG_SAVE_RELEASE when the save frees the lease, else "";
#   {checks}: PG_SAVE_FENCED (lease_token given), PG_SAVE_VERSION
#             (expect_version given), PG_SAVE_EXPECT (expect_fields given),
#             in that order, or "";
#   {notify}: PG_SAVE_NOTIFY on a release, else "".
# Atomicity: one UPDATE. Under READ COMMITTED a concurrent writer makes it
# wait for the row and re-evaluate the WHERE (subquery included) on the
# newest version, so the checks and the write see the same row. The SET
# reads the old row: c.version + 1 is the new version. Restates apply_step:
# live (not a tombstone, not expired), lease held, record version, per-key
# versions, then the write. Why not PG_APPLY every time: its FOR UPDATE CTE,
# the verdict and the join cost the server more than the whole write, for a
# classification that only a failed save needs (measured in
# docs/stores-sql.md).
PG_SAVE = """
    UPDATE {table} AS c
    SET version = c.version + 1,
        fields = {fields},
        accessed = %(now)s::float8,
        expires = LEAST(%(now)s::float8 + %(idle)s::float8, c.absolute_expires){lease}
    WHERE c.app_id = %(app_id)s AND c.id_hash = %(id_hash)s
      AND NOT c.invalidated AND c.expires > %(now)s::float8{checks}
    RETURNING c.version{notify}
"""

# {fields} of a merge: the set keys written with the new version.
PG_SAVE_FIELDS_MERGE = "c.fields || " + _PG_SET_KEYS

# {fields} of a merge that deletes keys: as PG_APPLY_FIELDS_MERGE (the
# deleted keys go first: set wins over delete).
PG_SAVE_FIELDS_MERGE_DELETE = PG_APPLY_FIELDS_MERGE

# {fields} of a replace: as PG_APPLY_FIELDS_REPLACE, on the row being updated.
PG_SAVE_FIELDS_REPLACE = PG_APPLY_FIELDS_REPLACE

PG_SAVE_RELEASE = """,
        lease_token = NULL, lease_until = 0"""

PG_SAVE_FENCED = """
      AND c.lease_token = %(token)s::text AND c.lease_until > %(now)s::float8"""

PG_SAVE_VERSION = """
      AND c.version = %(expect_version)s::bigint"""

# The per-key check as an ARRAY sublink, never as NOT EXISTS: the planner
# turns NOT EXISTS into an anti-join, and when a concurrent save makes the
# UPDATE re-check the newest row version (EvalPlanQual), a join is not
# re-evaluated the way a subplan of the row is, so the check would pass on
# the stale per-key versions and a save would overwrite a concurrent one
# (caught by tests/processes: optimistic increments went missing). An ARRAY
# sublink stays a subplan, computed again from the newest row.
PG_SAVE_EXPECT = """
      AND cardinality(ARRAY(
          SELECT e.key FROM jsonb_each(%(expect_fields)s::jsonb) AS e
          WHERE (c.fields -> e.key -> 'v') IS DISTINCT FROM NULLIF(e.value, 'null'::jsonb)
      )) = 0"""

PG_SAVE_NOTIFY = """,
        pg_notify({channel}, %(app_id)s || ':' || %(id_hash)s)"""

# In: app_id, id_hash, now, token (or NULL). Out: one row when
# a live record became a tombstone, none otherwise (absent, expired, already
# a tombstone, or ``token`` given and not holding a live lease). One UPDATE
# whose WHERE is the whole check of invalidate_step; the tombstone keeps
# ``created``, empties the fields, drops any lease, bumps the version and
# lasts until the absolute expiry. Wakes lease waiters at commit.
PG_INVALIDATE = """
    WITH ended AS (
        UPDATE {table}
        SET version = version + 1, accessed = %(now)s::float8, expires = absolute_expires,
            invalidated = true, lease_token = NULL, lease_until = 0,
            fields = jsonb_build_object()
        WHERE app_id = %(app_id)s AND id_hash = %(id_hash)s
          AND NOT invalidated AND expires > %(now)s::float8
          AND (%(token)s::text IS NULL
               OR (lease_token = %(token)s::text AND lease_until > %(now)s::float8))
        RETURNING 1
    )
    SELECT pg_notify({channel}, %(app_id)s || ':' || %(id_hash)s) FROM ended
"""

# In: app_id, id_hash, token. Out: one row when the lease was
# freed, none when ``token`` did not hold it (expired or not: unlock_step
# compares the token only). One UPDATE; wakes waiters at commit.
PG_UNLOCK = """
    WITH freed AS (
        UPDATE {table} SET lease_token = NULL, lease_until = 0
        WHERE app_id = %(app_id)s AND id_hash = %(id_hash)s AND lease_token = %(token)s::text
        RETURNING 1
    )
    SELECT pg_notify({channel}, %(app_id)s || ':' || %(id_hash)s) FROM freed
"""

# In: app_id, id_hash, token, now, lease. Out: one row when renewed, none when
# the lease is not held live by ``token`` or the record is a tombstone
# (renew_step). One UPDATE.
PG_RENEW = """
    UPDATE {table} SET lease_until = %(now)s::float8 + %(lease)s::float8
    WHERE app_id = %(app_id)s AND id_hash = %(id_hash)s AND NOT invalidated
      AND lease_token = %(token)s::text AND lease_until > %(now)s::float8
    RETURNING 1
"""

# In: app_id, id_hash. Out: one row when a record was removed.
# One DELETE; wakes waiters (a waiter then finds the session absent).
PG_DELETE = """
    WITH removed AS (
        DELETE FROM {table} WHERE app_id = %(app_id)s AND id_hash = %(id_hash)s RETURNING 1
    )
    SELECT pg_notify({channel}, %(app_id)s || ':' || %(id_hash)s) FROM removed
"""

# In: app_id or NULL. Out: app_id, id_hash, _PG_COLUMNS of every row of that
# namespace (or all), newest access first. A plain read (admin listing).
PG_LIST = f"""
    SELECT app_id, id_hash, {_PG_COLUMNS} FROM {{table}}
    WHERE (%(app_id)s::text IS NULL OR app_id = %(app_id)s::text)
    ORDER BY accessed DESC
"""

# In: cutoff (now - grace), limit. Out: the number of rows deleted (rowcount).
# The inner SELECT walks the expires index, oldest first, at most ``limit``
# rows, skipping rows a request holds right now (SKIP LOCKED: concurrent
# purgers and savers never wait for each other). The outer WHERE re-checks
# the expiry on the row being deleted: under READ COMMITTED a save that
# extended the row meanwhile makes the DELETE re-read it and keep it.
PG_PURGE = """
    DELETE FROM {table}
    WHERE (app_id, id_hash) IN (
        SELECT app_id, id_hash FROM {table}
        WHERE expires <= %(cutoff)s::float8
        ORDER BY expires
        LIMIT %(limit)s::bigint
        FOR UPDATE SKIP LOCKED
    ) AND expires <= %(cutoff)s::float8
"""


# ---------------------------------------------------------------------------
# MySQL / MariaDB (stores/mysql.py)
#
# ``{table}`` is a validated, backquoted identifier; parameters are PyMySQL's
# ``%(name)s`` (escaped client-side). The store runs the shared pure steps of
# state.py between a locking read and a write of one transaction (READ
# COMMITTED, so a locking read of an absent row takes no gap lock), the way
# SQLite does: the rules are written once, in Python. Fields are the packed
# map of state.pack_fields, as in SQLite. With CLIENT.MULTI_STATEMENTS the
# transaction costs two round trips: "START TRANSACTION; SELECT ... FOR
# UPDATE", then "UPDATE ...; COMMIT" (or "COMMIT" alone). Rejected: a
# one-statement restatement in SQL as for PostgreSQL; MySQL has no
# data-modifying CTE and no RETURNING (MariaDB has RETURNING on DELETE and
# INSERT only), so it would take a stored procedure to install and version.
# ---------------------------------------------------------------------------

MYSQL_SCHEMA = (
    """
    CREATE TABLE IF NOT EXISTS {table} (
        app_id VARCHAR(255) NOT NULL,
        id_hash VARCHAR(128) CHARACTER SET ascii COLLATE ascii_bin NOT NULL,
        version BIGINT NOT NULL,
        created DOUBLE NOT NULL,
        accessed DOUBLE NOT NULL,
        expires DOUBLE NOT NULL,
        absolute_expires DOUBLE NOT NULL,
        invalidated TINYINT(1) NOT NULL DEFAULT 0,
        lease_token VARCHAR(255) NULL,
        lease_until DOUBLE NOT NULL DEFAULT 0,
        fields LONGBLOB NOT NULL,
        PRIMARY KEY (app_id, id_hash),
        KEY {index} (expires)
    ) ENGINE=InnoDB DEFAULT CHARSET=utf8mb4 COLLATE=utf8mb4_bin
    """,
)

# In: table (the unquoted name). Out: one row, 1 if the table exists in the
# connection's database, else 0. A catalog read, for a store that must not
# create its schema (MySQLStore.require_existing).
MYSQL_TABLE_EXISTS = (
    "SELECT COUNT(*) FROM information_schema.tables "
    "WHERE table_schema = DATABASE() AND table_name = %(table)s"
)

_MYSQL_COLUMNS = (
    "version, created, accessed, expires, absolute_expires, "
    "invalidated, lease_token, lease_until, fields"
)

# In: app_id, id_hash. Out: one row of _MYSQL_COLUMNS or none. A plain
# (consistent, non-locking) read in autocommit: a load that needs no write.
MYSQL_SELECT = (
    f"SELECT {_MYSQL_COLUMNS} FROM {{table}} WHERE app_id = %(app_id)s AND id_hash = %(id_hash)s"
)

# In: app_id, id_hash. Out: the first result is START TRANSACTION's (empty),
# the second the row or none, now locked until COMMIT/ROLLBACK. One round
# trip; the store then runs the pure step and ends with one of the below.
MYSQL_BEGIN_SELECT_FOR_UPDATE = f"START TRANSACTION; {MYSQL_SELECT} FOR UPDATE"

# In: app_id, id_hash, then _MYSQL_COLUMNS' values. Overwrites the row read
# FOR UPDATE in this transaction, and commits. One round trip.
MYSQL_UPDATE_COMMIT = """
    UPDATE {table} SET version = %(version)s, created = %(created)s, accessed = %(accessed)s,
        expires = %(expires)s, absolute_expires = %(absolute_expires)s,
        invalidated = %(invalidated)s, lease_token = %(lease_token)s,
        lease_until = %(lease_until)s, fields = %(fields)s
    WHERE app_id = %(app_id)s AND id_hash = %(id_hash)s;
    COMMIT
"""

# In: app_id, id_hash. Removes the row read FOR UPDATE, and commits.
MYSQL_DELETE_COMMIT = (
    "DELETE FROM {table} WHERE app_id = %(app_id)s AND id_hash = %(id_hash)s; COMMIT"
)

# Ends a transaction that wrote nothing (releases the row lock).
MYSQL_COMMIT = "COMMIT"
MYSQL_ROLLBACK = "ROLLBACK"

# In: app_id, id_hash, _MYSQL_COLUMNS' values. Create-if-absent in one
# autocommit statement: the primary key decides; a duplicate key error
# (1062) means some record (live, expired or tombstone) exists: create_step.
MYSQL_INSERT = f"""
    INSERT INTO {{table}} (app_id, id_hash, {_MYSQL_COLUMNS})
    VALUES (%(app_id)s, %(id_hash)s, %(version)s, %(created)s, %(accessed)s, %(expires)s,
            %(absolute_expires)s, %(invalidated)s, %(lease_token)s, %(lease_until)s, %(fields)s)
"""

# In: app_id, id_hash. Removes a record outright (admin delete), autocommit.
# Out: rowcount.
MYSQL_DELETE = "DELETE FROM {table} WHERE app_id = %(app_id)s AND id_hash = %(id_hash)s"

# In: app_id or NULL (twice). Out: app_id, id_hash, _MYSQL_COLUMNS for every row.
MYSQL_LIST = f"""
    SELECT app_id, id_hash, {_MYSQL_COLUMNS} FROM {{table}}
    WHERE (%(app_id)s IS NULL OR app_id = %(app_id)s) ORDER BY accessed DESC
"""

# In: cutoff (now - grace), limit. Out: rowcount. One autocommit DELETE that
# walks the expires index oldest first; InnoDB evaluates the WHERE on the
# latest committed row it locks, so a save that extended a row keeps it.
MYSQL_PURGE = """
    DELETE FROM {table} WHERE expires <= %(cutoff)s ORDER BY expires LIMIT %(limit)s
"""
