"""Every SQL statement (and the Redis script) of the event channels and of
purge-with-values, with headers.

Kept out of ``stores/_sql.py`` (the session statements) so the two evolve
apart; each statement says its inputs, outputs and atomicity.
"""

from __future__ import annotations

__all__ = [
    "MYSQL_PURGE_DELETE",
    "MYSQL_PURGE_SELECT",
    "PG_EVENT_VALUES_FETCH",
    "PG_EVENT_VALUES_PRUNE",
    "PG_EVENT_VALUES_SCHEMA",
    "PG_NOTIFY",
    "PG_NOTIFY_BY_REF",
    "PG_PURGE_RETURNING",
    "REDIS_PURGE_RETURNING",
    "SQLITE_EVENTS_INSERT",
    "SQLITE_EVENTS_LAST",
    "SQLITE_EVENTS_PRUNE",
    "SQLITE_EVENTS_READ",
    "SQLITE_EVENTS_SCHEMA",
    "SQLITE_EVENTS_FIRST",
]

# -- SQLite (cluster/_sqlite_channel.py) --------------------------------------
# An append-only log in the sessions' database file: ``seq`` orders it for
# every process of the host; retention is by count (the newest N rows).

SQLITE_EVENTS_SCHEMA = """
    CREATE TABLE IF NOT EXISTS shoal_events (
        seq INTEGER PRIMARY KEY AUTOINCREMENT,
        app_id TEXT NOT NULL,
        data BLOB NOT NULL
    )
"""

# In: app_id, data. Out: lastrowid = the event's seq. One implicit transaction.
SQLITE_EVENTS_INSERT = "INSERT INTO shoal_events (app_id, data) VALUES (?, ?)"

# In: newest seq to drop. Out: rowcount. Run every 64 inserts: bounded retention.
SQLITE_EVENTS_PRUNE = "DELETE FROM shoal_events WHERE seq <= ?"

# In: none. Out: one row, the newest seq or NULL. Where a new listener starts.
SQLITE_EVENTS_LAST = "SELECT max(seq) FROM shoal_events"

# In: none. Out: one row, the oldest seq kept or NULL (a gap means events were
# pruned before this listener read them: missed).
SQLITE_EVENTS_FIRST = "SELECT min(seq) FROM shoal_events"

# In: after seq, limit. Out: (seq, app_id, data) rows in order, every app's
# (the reader filters: its position then follows the whole log). A read snapshot.
SQLITE_EVENTS_READ = "SELECT seq, app_id, data FROM shoal_events WHERE seq > ? ORDER BY seq LIMIT ?"

# -- PostgreSQL (cluster/_pg_channel.py) --------------------------------------
# NOTIFY payloads stop at 8000 bytes: an event with the ended session's values
# goes into shoal_event_values and the payload is only "@<id>" (a reference).

PG_EVENT_VALUES_SCHEMA = """
    CREATE TABLE IF NOT EXISTS shoal_event_values (
        id bigserial PRIMARY KEY,
        time float8 NOT NULL DEFAULT extract(epoch FROM clock_timestamp()),
        data bytea NOT NULL
    )
"""

# In: channel, payload (text < 8000 bytes). Out: one row. Delivered at commit
# (autocommit: at once) to every LISTENing connection.
PG_NOTIFY = "SELECT pg_notify(%(channel)s, %(payload)s)"

# In: channel, data (the whole encoded event). Out: one row. One statement: the
# row exists before any listener is told its id.
PG_NOTIFY_BY_REF = """
    WITH v AS (INSERT INTO shoal_event_values (data) VALUES (%(data)s) RETURNING id)
    SELECT pg_notify(%(channel)s, '@' || v.id::text) FROM v
"""

# In: id. Out: zero or one row (data). Zero when pruned: that event was missed.
PG_EVENT_VALUES_FETCH = "SELECT data FROM shoal_event_values WHERE id = %(id)s"

# In: max_age seconds. Out: rowcount. Retention of referenced events.
PG_EVENT_VALUES_PRUNE = """
    DELETE FROM shoal_event_values
    WHERE time < extract(epoch FROM clock_timestamp()) - %(max_age)s::float8
"""

# -- purge that reads what it deletes (stores' purge_ended) -------------------
# The ``expired`` event carries the ended session's values, so the purge must
# return each deleted record's fields in the SAME statement: a save landing
# between a read and a delete would otherwise be announced with old values
# (or its record deleted unannounced). Same rows and re-check as the plain
# purges in stores/_sql.py.

# Template: {table}. In: cutoff, limit. Out: (app_id, id_hash, invalidated,
# fields::text) per deleted row. One statement; SKIP LOCKED as PG_PURGE.
PG_PURGE_RETURNING = """
    DELETE FROM {table}
    WHERE (app_id, id_hash) IN (
        SELECT app_id, id_hash FROM {table}
        WHERE expires <= %(cutoff)s::float8
        ORDER BY expires
        LIMIT %(limit)s::bigint
        FOR UPDATE SKIP LOCKED
    ) AND expires <= %(cutoff)s::float8
    RETURNING app_id, id_hash, invalidated, fields::text
"""

# MySQL / MariaDB (MySQLStore.purge_ended). MySQL has no DELETE ... RETURNING:
# one transaction reads the purgeable rows FOR UPDATE (locked: a save that
# comes meanwhile waits, then finds the row gone), deletes exactly those, and
# commits. Two round trips per batch.

# Template: {table}. In: cutoff, limit. Out: the first result is START
# TRANSACTION's (empty), the second (app_id, id_hash, invalidated, fields)
# rows, oldest expiry first, locked until COMMIT.
MYSQL_PURGE_SELECT = """
    START TRANSACTION;
    SELECT app_id, id_hash, invalidated, fields FROM {table}
    WHERE expires <= %(cutoff)s ORDER BY expires LIMIT %(limit)s FOR UPDATE
"""

# Template: {table}, {keys} (one "(%s, %s)" per row read above). In: cutoff,
# then app_id, id_hash of each row. Deletes them (the expiry re-checked) and
# commits. One round trip.
MYSQL_PURGE_DELETE = """
    DELETE FROM {table} WHERE (app_id, id_hash) IN ({keys}) AND expires <= %s;
    COMMIT
"""

# Redis (RedisStore.purge_ended). As stores/_lua.py's PURGE, returning the record.
REDIS_PURGE_RETURNING = """
-- PURGE_RETURNING: delete one record found by SCAN if it expired more than
-- grace ago, and return what it held.
-- KEYS[1]  a key SCAN matched with the store's prefix
-- ARGV[1]  now   ARGV[2]  grace
-- Returns  0 when not deleted (not a record, or still within grace), else the
--          record's HGETALL (flat name, value list) as it was when deleted
-- Atomic: the expiry check, the read and the DEL are one step, so a save that
-- extended the record after the SCAN saw it always wins, and what is
-- returned is exactly what was deleted.
local key = KEYS[1]
if redis.call('TYPE', key)['ok'] ~= 'hash' then return 0 end
local expires = redis.call('HGET', key, 'exp')
if not expires or tonumber(expires) + tonumber(ARGV[2]) > tonumber(ARGV[1]) then
  return 0
end
local all = redis.call('HGETALL', key)
redis.call('DEL', key)
return all
"""
