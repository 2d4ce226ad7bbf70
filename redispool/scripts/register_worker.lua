--[[
  register_worker: a worker process joins the pool, or beats its heartbeat.

  When `incarnation` already holds `worker_id` and the worker is registered,
  the heartbeat is refreshed, and the worker is put back if it is neither
  idle nor leased (a lost key; an O(1) count says when to look). An
  incarnations hash that lost this worker's entry is mended from its alive
  key. An incarnation taken out of service (removed, drained, left idle:
  its id in `removed`) is never registered again: {UNKNOWN_WORKER}.
  Otherwise, if `register` is '1', the id is
  taken: refused when another live incarnation holds it (unless it is
  `replaces`, which the caller knows to be dead) or when it was added by hand;
  a dead incarnation's worker is buried first (its lease ends as "worker
  dead"); if that incarnation had been taken out of service, the id is not
  registered again ({UNKNOWN_WORKER}: drain and remove stick when the
  drained process dies before it leaves). The worker then goes to the
  oldest live waiter, else idle.

  KEYS[1..16] the pool's common keys and the workers keys (see
              includes/pool.lua and includes/workers.lua)
  ARGV[1]     worker_id
  ARGV[2]     meta          'host|pid'
  ARGV[3]     incarnation   unique per process start
  ARGV[4]     heartbeat_ms  integer ms the heartbeat lasts
  ARGV[5]     replaces      incarnation known to be dead, or ''
  ARGV[6]     register      '1' to register if needed, '0' to beat only
  ARGV[7]     overflow      '1' for an overflow worker
  ARGV[8]     ttl_ms        default lease_ttl_ms for a new pool
  ARGV[9]     strategy      default strategy for a new pool

  Returns
    {OK, 0}            heartbeat refreshed
    {OK, 1}            registered (anew)
    {UNKNOWN_WORKER}   not registered, and register was '0' or this
                       incarnation (or the dead one it replaces) was taken
                       out of service
    {ID_TAKEN}         a live worker or a hand-added one holds the id
]]
-- @include pool
-- @include handoff
-- @include workers
-- @include repair

local wid, meta, incarnation = ARGV[1], ARGV[2], ARGV[3]
local heartbeat_ms, replaces = tonumber(ARGV[4]), ARGV[5]

local now, now_us = server_time()
local current = rcall('HGET', W.incarnations, wid)
local known = rcall('HEXISTS', K.workers, wid) == 1
if not current and rcall('GET', alive_key(wid)) == incarnation then
  rcall('HSET', W.incarnations, wid, incarnation)  -- its entry was lost; the id is ours
  current = incarnation
end
if current == incarnation and known then
  beat(wid, incarnation, heartbeat_ms, now)
  if workers_missing() and not corrupted() then restore(wid, now, now_us) end
  return {OK, 0}
end
if ARGV[6] ~= '1' then return {UNKNOWN_WORKER} end
local retired = rcall('HGET', W.removed, wid)
if retired == incarnation then return {UNKNOWN_WORKER} end  -- retired (buried since, perhaps)
if retired and not current and retired == replaces then
  -- the retired one died and was buried first: its replacement must not serve either
  rcall('HDEL', W.removed, wid)
  return {UNKNOWN_WORKER}
end
local refused = corrupted()
if refused then return refused end
probe('HLEN', W.removed)
if current and current ~= incarnation then
  if current ~= replaces and rcall('EXISTS', alive_key(wid)) == 1 then return {ID_TAKEN} end
  local was_retired = retired == current
  bury(wid, now)
  if was_retired then return {UNKNOWN_WORKER} end
elseif not current and known then
  return {ID_TAKEN}
end

rcall('HSETNX', K.config, 'lease_ttl_ms', ARGV[8])
rcall('HSETNX', K.config, 'strategy', ARGV[9])
rcall('HSET', W.incarnations, wid, incarnation)
rcall('HDEL', W.removed, wid)
beat(wid, incarnation, heartbeat_ms, now)
if ARGV[7] == '1' then rcall('SADD', W.overflow, wid) end
rcall('HSET', K.workers, wid, meta)
rcall('SREM', K.draining, wid)
if not rcall('ZSCORE', K.deadlines, wid) and not rcall('LPOS', K.idle, wid) then
  release(wid, now, now_us, release_plan(wid))
end
return {OK, 1}
