"""Every Lua script of the Redis store, each with a header: KEYS, ARGV, returns, atomicity.

The scripts restate the pure steps of ``stores/state.py`` (the reference the
local stores run) one for one, so the contract suite holds Redis to the same
rules. Redis runs a script atomically: no other command of any client runs
between its first and last ``redis.call``, on a standalone server and on the
Cluster node that owns the script's key (a Cluster runs a script on one slot).

Record layout: one hash per session, key ``<prefix>{<app_id>:<id_hash>}``; the
braces are a Cluster hash tag, so the record and its notification channel
``<key>:free`` share one slot. Fields:

    ver   record version (integer)        ctd  created
    acc   accessed                        exp  expires (idle, capped by abs)
    abs   absolute expiry                 inv  "1" on a tombstone, else absent
    lt    lease token, absent when free   lu   lease end (seconds)
    f:<k> the value of session key <k>    v:<k> the record version that wrote <k>

Session keys live only under ``f:``/``v:``, meta fields have no colon, so no
session key can collide with a meta field.

Numbers. Times are float seconds that the caller passes as ARGV strings
(Python ``repr``: shortest exact form). Redis' Lua 5.1 numbers are IEEE
doubles like Python floats and ``tonumber`` parses them exactly, so ``now +
idle``, ``min`` and ``<=`` give bit-identical results to ``state.py``. Lua
would print a number with ``%.14g`` (``tostring`` and ``redis.call``
arguments), which loses digits: every computed time is therefore stored
through ``fmt`` (``%.17g``, exact), and a time handed in by the caller is
stored as the caller's own string. Times are returned as strings, because
Redis truncates Lua numbers to integers in replies. Versions are integers
(``HINCRBY``), exact far beyond any session's life.

Expiry. Every write sets the hash's native TTL to ``expires + grace - now``
seconds (relative ``PEXPIRE``, see ``set_ttl``), so Redis itself drops records
that no request can still be saving; ``grace`` is the store URL's parameter.

Notifications. Freeing a lease (unlock, a releasing apply, invalidate,
delete) publishes on ``<key>:free`` with the command the caller names in
ARGV: ``SPUBLISH`` on a Cluster (sharded pub/sub: the message stays on the
slot's shard), ``PUBLISH`` elsewhere. Publishing the same slot's shard
channel from a script is allowed on a Cluster; another slot's is refused.
"""

from __future__ import annotations

from typing import Final

__all__ = [
    "APPLY",
    "CREATE",
    "DELETE",
    "INFO",
    "INVALIDATE",
    "LOAD",
    "PURGE",
    "RENEW",
    "UNLOCK",
]

# Helpers prepended to every script that needs them (scripts are cached by
# SHA, so the shared text costs nothing per call).
_PRELUDE: Final = """
local function fmt(x)
  return string.format('%.17g', x)
end

-- Native expiry: relative to the server's clock, from the caller's times.
-- Rejected alternative: PEXPIREAT at expires + grace, which trusts the app
-- server's clock to agree with Redis' clock; the relative form only needs
-- the caller's own clock to be consistent with itself.
local function set_ttl(key, expires, now, grace)
  local ms = math.ceil((expires + grace - now) * 1000)
  if ms < 1 then ms = 1 end
  redis.call('PEXPIRE', key, string.format('%.0f', ms))
end

local function notify(key, command)
  redis.call(command, key .. ':free', '1')
end

local function holds_lease(lt, lu, token, now)
  return lt == token and tonumber(lu) > now
end

-- One variadic command (HSET, HDEL, HMGET) over the arguments in `list`,
-- in as few calls as Lua allows: each redis.call costs ~3-6 us of server
-- time inside a script (docs/benchmarks.md), while unpack() is bounded by
-- Lua's C stack (LUAI_MAXCSTACK, 8000), hence steps of 4000. Returns the
-- replies of an HMGET concatenated, in order.
local function variadic(command, key, list)
  if #list <= 4000 then return redis.call(command, key, unpack(list)) end
  local out = {}
  for first = 1, #list, 4000 do
    local reply = redis.call(command, key, unpack(list, first, math.min(first + 3999, #list)))
    if type(reply) == 'table' then
      for _, x in ipairs(reply) do out[#out + 1] = x end
    end
  end
  return out
end
"""


def _script(body: str) -> str:
    return _PRELUDE + body


LOAD: Final = _script("""
-- LOAD: read a live record; touch it when due; take its lease when asked.
-- Restates state.load_step.
-- KEYS[1]  the record hash
-- ARGV[1]  now                   ARGV[2]  '1' touch requested, else '0'
-- ARGV[3]  touch.if_accessed_before       ARGV[4]  touch.idle_timeout
-- ARGV[5]  '1' lock requested, else '0'   ARGV[6]  lock token
-- ARGV[7]  lock lease (seconds)           ARGV[8]  grace (native TTL margin)
-- Returns  {'absent'} | {'invalidated'} | {'expired'} | {'locked', lease_end}
--          | {'loaded', the record's HGETALL, its acc and exp after the
--             touch (its lt and lu as they were: no part of a Record)}
-- Atomic: the checks, the touch and the lease are one step; a reader that
-- needs no touch and no lease writes nothing.
-- Lean: one HGETALL whose meta fields are found in Lua, then at most one
-- HSET (touch and lease together) and one PEXPIRE. Rejected: HMGET of the
-- meta fields, then HSETs, then an HGETALL to return (measured ~3 us more
-- server time per call, SLOWLOG, interleaved).
local key = KEYS[1]
local all = redis.call('HGETALL', key)
local ver, inv, acc, exp, abs, lt, lu, iacc, iexp
for i = 1, #all, 2 do
  local name = all[i]
  if #name <= 3 then  -- session fields are 'f:<k>'/'v:<k>'; meta names are short
    if name == 'ver' then ver = all[i + 1]
    elseif name == 'acc' then acc, iacc = all[i + 1], i + 1
    elseif name == 'exp' then exp, iexp = all[i + 1], i + 1
    elseif name == 'abs' then abs = all[i + 1]
    elseif name == 'inv' then inv = all[i + 1]
    elseif name == 'lt' then lt = all[i + 1]
    elseif name == 'lu' then lu = all[i + 1]
    end
  end
end
if not ver then return {'absent'} end
if inv then return {'invalidated'} end
local now = tonumber(ARGV[1])
if tonumber(exp) <= now then return {'expired'} end
local lock = ARGV[5] == '1'
if lock and lt and lt ~= ARGV[6] and tonumber(lu) > now then
  return {'locked', lu}
end
local w = {}
if ARGV[2] == '1' and tonumber(acc) < tonumber(ARGV[3]) then
  local expires = math.min(now + tonumber(ARGV[4]), tonumber(abs))
  local e = fmt(expires)
  w[1], w[2], w[3], w[4] = 'acc', ARGV[1], 'exp', e
  all[iacc], all[iexp] = ARGV[1], e
  set_ttl(key, expires, now, tonumber(ARGV[8]))
end
if lock then
  local n = #w
  w[n + 1], w[n + 2], w[n + 3], w[n + 4] = 'lt', ARGV[6], 'lu', fmt(now + tonumber(ARGV[7]))
end
if #w > 0 then redis.call('HSET', key, unpack(w)) end
return {'loaded', all}
""")

CREATE: Final = _script("""
-- CREATE: create-if-absent; any existing record, even a tombstone, wins.
-- Restates state.create_step.
-- KEYS[1]  the record hash
-- ARGV[1]  now        ARGV[2]  created     ARGV[3]  expires
-- ARGV[4]  absolute_expires                ARGV[5]  grace
-- ARGV[6]  '1' lock requested, else '0'    ARGV[7]  lock token
-- ARGV[8]  lock lease (seconds)
-- ARGV[9..] session key, value, session key, value, ...
-- Returns  1 when created, 0 when a record already existed (nothing written)
-- Atomic: the existence check and every write are one step.
local key = KEYS[1]
if redis.call('EXISTS', key) == 1 then return 0 end
local now = tonumber(ARGV[1])
redis.call('HSET', key, 'ver', '1', 'ctd', ARGV[2], 'acc', ARGV[1], 'exp', ARGV[3],
           'abs', ARGV[4])
if ARGV[6] == '1' then
  redis.call('HSET', key, 'lt', ARGV[7], 'lu', fmt(now + tonumber(ARGV[8])))
end
for i = 9, #ARGV, 2 do
  redis.call('HSET', key, 'f:' .. ARGV[i], ARGV[i + 1], 'v:' .. ARGV[i], '1')
end
set_ttl(key, tonumber(ARGV[3]), now, tonumber(ARGV[5]))
return 1
""")

APPLY: Final = _script("""
-- APPLY: check every condition of a Change, then write all of it, or nothing.
-- Restates state.apply_step: liveness, lease fencing, record CAS, per-key
-- expectations, then replace/delete/set with per-key versions, the idle
-- expiry reset, and the lease release.
-- KEYS[1]  the record hash
-- ARGV[1]  now        ARGV[2]  idle_timeout   ARGV[3]  grace
-- ARGV[4]  '1' replace, else '0'              ARGV[5]  '1' release, else '0'
-- ARGV[6]  expect_version, '' for none
-- ARGV[7]  '1' a lease_token is given, else '0'   ARGV[8]  lease_token
-- ARGV[9]  publish command ('PUBLISH' or 'SPUBLISH')
-- ARGV[10] nset   ARGV[11] ndelete   ARGV[12] nexpect
-- then nset pairs (key, value), ndelete keys, nexpect pairs (key, version
-- seen at load, '' when the key was absent)
-- Returns  {'ok', new_version} | {'gone'} | {'lock_lost'}
--          | {'conflict', {conflicting keys...}} (an empty list: the version)
-- Atomic: all checks read the state every write then changes; a failed
-- check writes nothing. A release that frees a lease publishes on <key>:free.
-- Lean: a save under merge is three calls (HMGET, one HSET of the new
-- version, access time, expiry and every written key, PEXPIRE); deletes are
-- one HDEL, per-key expectations one HMGET. Rejected: HINCRBY plus an HSET
-- per key (two calls more, ~2 us more server time per save, SLOWLOG).
local key = KEYS[1]
local now = tonumber(ARGV[1])
local m = redis.call('HMGET', key, 'ver', 'inv', 'exp', 'abs', 'lt', 'lu')
if not m[1] or m[2] or tonumber(m[3]) <= now then return {'gone'} end
local has_token, token = ARGV[7] == '1', ARGV[8]
if has_token and not holds_lease(m[5], m[6], token, now) then return {'lock_lost'} end
if ARGV[6] ~= '' and tonumber(m[1]) ~= tonumber(ARGV[6]) then
  -- A truthy token (as Python's `if change.lease_token`) makes it LOCK_LOST.
  if has_token and token ~= '' then return {'lock_lost'} end
  return {'conflict', {}}
end
local nset, ndel, nexp = tonumber(ARGV[10]), tonumber(ARGV[11]), tonumber(ARGV[12])
local sets, dels, exps = 13, 13 + 2 * nset, 13 + 2 * nset + ndel
if nexp > 0 then
  local names = {}
  for i = exps, exps + 2 * nexp - 1, 2 do names[#names + 1] = 'v:' .. ARGV[i] end
  local current = variadic('HMGET', key, names)
  local conflicts = {}
  for j = 1, nexp do
    local i = exps + 2 * (j - 1)
    local seen, now_v = ARGV[i + 1], current[j]
    if seen == '' then
      if now_v then conflicts[#conflicts + 1] = ARGV[i] end
    elseif not now_v or tonumber(now_v) ~= tonumber(seen) then
      conflicts[#conflicts + 1] = ARGV[i]
    end
  end
  if #conflicts > 0 then return {'conflict', conflicts} end
end

local version = tonumber(m[1]) + 1
local vstr = string.format('%d', version)
local before = {}
if ARGV[4] == '1' then
  -- A whole-record write keeps the versions of keys it did not change:
  -- remember each written key's value and version before clearing.
  for i = sets, dels - 1, 2 do
    local old = redis.call('HMGET', key, 'f:' .. ARGV[i], 'v:' .. ARGV[i])
    if old[1] then before[ARGV[i]] = old end
  end
  local doomed = {}
  for _, name in ipairs(redis.call('HKEYS', key)) do
    local head = string.sub(name, 1, 2)
    if head == 'f:' or head == 'v:' then doomed[#doomed + 1] = name end
  end
  if #doomed > 0 then variadic('HDEL', key, doomed) end
end
if ndel > 0 then
  local names = {}
  for i = dels, exps - 1 do
    names[#names + 1] = 'f:' .. ARGV[i]
    names[#names + 1] = 'v:' .. ARGV[i]
  end
  variadic('HDEL', key, names)
end
local expires = math.min(now + tonumber(ARGV[2]), tonumber(m[4]))
local w, n = {'ver', vstr, 'acc', ARGV[1], 'exp', fmt(expires)}, 6
for i = sets, dels - 1, 2 do
  local k, kver = ARGV[i], vstr
  local old = before[k]
  if old and old[1] == ARGV[i + 1] then kver = old[2] end
  w[n + 1], w[n + 2], w[n + 3], w[n + 4] = 'f:' .. k, ARGV[i + 1], 'v:' .. k, kver
  n = n + 4
end
variadic('HSET', key, w)
if ARGV[5] == '1' and m[5] then
  redis.call('HDEL', key, 'lt', 'lu')
  notify(key, ARGV[9])
end
set_ttl(key, expires, now, tonumber(ARGV[3]))
return {'ok', version}
""")

INVALIDATE: Final = _script("""
-- INVALIDATE: replace a live record by a tombstone kept until its absolute
-- expiry (+ grace natively). Restates state.invalidate_step.
-- KEYS[1]  the record hash
-- ARGV[1]  now   ARGV[2]  grace
-- ARGV[3]  '1' a lease_token is given, else '0'   ARGV[4]  lease_token
-- ARGV[5]  publish command ('PUBLISH' or 'SPUBLISH')
-- Returns  1 when a tombstone was written; 0 when there was no live record
--          or the given token does not hold the lease (nothing written)
-- Atomic: the check, the delete and the tombstone are one step, so no save
-- can land between them; a dropped lease publishes on <key>:free.
local key = KEYS[1]
local now = tonumber(ARGV[1])
local m = redis.call('HMGET', key, 'ver', 'inv', 'exp', 'abs', 'lt', 'lu', 'ctd')
if not m[1] or m[2] or tonumber(m[3]) <= now then return 0 end
if ARGV[3] == '1' and not holds_lease(m[5], m[6], ARGV[4], now) then return 0 end
redis.call('DEL', key)
redis.call('HSET', key, 'ver', string.format('%d', tonumber(m[1]) + 1), 'ctd', m[7],
           'acc', ARGV[1], 'exp', m[4], 'abs', m[4], 'inv', '1')
set_ttl(key, tonumber(m[4]), now, tonumber(ARGV[2]))
if m[5] then notify(key, ARGV[5]) end
return 1
""")

UNLOCK: Final = _script("""
-- UNLOCK: free the lease if ARGV[1] holds it (even an expired one), and wake
-- waiters. Restates state.unlock_step.
-- KEYS[1]  the record hash
-- ARGV[1]  lease token   ARGV[2]  publish command ('PUBLISH' or 'SPUBLISH')
-- Returns  1 when the lease was freed, else 0 (nothing written)
-- Atomic: compare-and-delete of the token; no other holder's lease is freed.
local key = KEYS[1]
if redis.call('HGET', key, 'lt') ~= ARGV[1] then return 0 end
redis.call('HDEL', key, 'lt', 'lu')
notify(key, ARGV[2])
return 1
""")

RENEW: Final = _script("""
-- RENEW: extend a lease the token still holds. Restates state.renew_step.
-- KEYS[1]  the record hash
-- ARGV[1]  lease token   ARGV[2]  now   ARGV[3]  lease (seconds)
-- Returns  1 when extended to now + lease; 0 when the lease was lost, the
--          record is a tombstone or is gone (nothing written)
-- Atomic: the holder check and the new lease end are one step.
local key = KEYS[1]
local now = tonumber(ARGV[2])
local m = redis.call('HMGET', key, 'ver', 'inv', 'lt', 'lu')
if not m[1] or m[2] or not holds_lease(m[3], m[4], ARGV[1], now) then return 0 end
redis.call('HSET', key, 'lu', fmt(now + tonumber(ARGV[3])))
return 1
""")

DELETE: Final = _script("""
-- DELETE: remove a record outright (admin use) and wake any lease waiters.
-- KEYS[1]  the record hash
-- ARGV[1]  publish command ('PUBLISH' or 'SPUBLISH')
-- Returns  1 when a record was removed, else 0
-- Atomic: one DEL; the publish follows it in the same script.
if redis.call('DEL', KEYS[1]) == 0 then return 0 end
notify(KEYS[1], ARGV[1])
return 1
""")

PURGE: Final = _script("""
-- PURGE: delete one record found by SCAN if it expired more than grace ago.
-- Restates state.is_purgeable, re-checked here at the moment of deleting.
-- KEYS[1]  a key SCAN matched with the store's prefix
-- ARGV[1]  now   ARGV[2]  grace
-- Returns  1 when deleted, else 0 (not a record, or still within grace)
-- Atomic: the expiry check and the DEL are one step, so a save that extended
-- the record after the SCAN saw it always wins.
local key = KEYS[1]
if redis.call('TYPE', key)['ok'] ~= 'hash' then return 0 end
local expires = redis.call('HGET', key, 'exp')
if not expires or tonumber(expires) + tonumber(ARGV[2]) > tonumber(ARGV[1]) then
  return 0
end
redis.call('DEL', key)
return 1
""")

INFO: Final = _script("""
-- INFO: one record's metadata without its values, for listing.
-- KEYS[1]  a key SCAN matched with the store's prefix
-- ARGV     none
-- Returns  nil when the key is not a record, else
--          {version, created, accessed, expires, '1' or '' (tombstone),
--           lease token or '', lease end or '', bytes of field values}
-- Atomic: read-only, one consistent view of the record.
local key = KEYS[1]
if redis.call('TYPE', key)['ok'] ~= 'hash' then return false end
local m = redis.call('HMGET', key, 'ver', 'ctd', 'acc', 'exp', 'inv', 'lt', 'lu')
if not m[1] then return false end
local size = 0
for _, name in ipairs(redis.call('HKEYS', key)) do
  if string.sub(name, 1, 2) == 'f:' then
    size = size + redis.call('HSTRLEN', key, name)
  end
end
return {m[1], m[2], m[3], m[4], m[5] or '', m[6] or '', m[7] or '', size}
""")
