--[[
  Helpers of the scripts about worker processes (used where a script says
  `-- @include workers`, after `-- @include pool`). After the pool's nine
  common KEYS they expect:
    KEYS[10] heartbeats    zset   id of a process-run worker -> heartbeat
                                  deadline (server ms)
    KEYS[11] incarnations  hash   worker id -> incarnation holding the id
    KEYS[12] dead_leases   zset   token -> server ms when that lease ended
                                  because its worker died
    KEYS[13] jobs          hash   worker id -> jobs started
    KEYS[14] overflow      set    overflow worker ids
    KEYS[15] jobs_failed   hash   worker id -> jobs failed or refused
    KEYS[16] removed       hash   worker id -> incarnation taken out of service
                                  (removed, drained, left idle): its heartbeat
                                  must not register it again
  A worker's alive key is the prefix plus 'alive:<id>' (its incarnation,
  with a TTL). RQ keeps the pool's jobs under the prefix plus 'rq' (see
  keys.py RQ_PART): a worker's queue is named by its id, so its RQ keys are
  <prefix>rq:<kind>:<id> (RQ_QUEUE_KINDS), its RQ worker records are the
  members of <prefix>rq:workers:<id>, and <prefix>rq:queues and
  <prefix>rq:workers list them.
]]
-- WORKER_DEAD, ID_TAKEN: generated from redispool/errors.py Code (see includes/pool.lua).

-- How long the reason of a lease ended by a dead worker is remembered.
local DEAD_LEASE_MEMORY_MS = 86400000

-- RQ's keys of one queue: '<rq prefix>:<kind>:<queue name>' (the list, its
-- intermediate list and RQ's registries; a test checks them against RQ).
local RQ_QUEUE_KINDS = {
  'queue', 'canceled', 'deferred', 'failed', 'finished', 'ready', 'scheduled', 'wip',
  'clean_registries',
}

-- How long the record of a job its worker died running stays (ms): RQ made
-- it permanent when the job started; it now lasts as long as a result does
-- (jobs.py RESULT_TTL; a test checks they agree).
local DEAD_JOB_TTL_MS = 300000

local W = {}

-- Point W at this call's KEYS (after bind_pool).
local function bind_workers()
  W.heartbeats, W.incarnations, W.dead = KEYS[10], KEYS[11], KEYS[12]
  W.jobs, W.overflow, W.jobs_failed, W.removed = KEYS[13], KEYS[14], KEYS[15], KEYS[16]
end

-- The members of `key` if it is a `kind` ('zset' or 'set'), else none.
local function members_if(key, kind)
  if rcall('TYPE', key)['ok'] ~= kind then return {} end
  if kind == 'zset' then return rcall('ZRANGE', key, 0, -1) end
  return rcall('SMEMBERS', key)
end

local function srem_if(key, member)
  if rcall('TYPE', key)['ok'] == 'set' then rcall('SREM', key, member) end
end

-- Delete the RQ keys of `wid`'s queue and its RQ worker records. Job records
-- and results stay: they expire with the TTL RQ gave them, or, for a job the
-- worker was running, DEAD_JOB_TTL_MS.
local function forget_rq(wid)
  local rq = K.prefix .. 'rq:'
  local queue = rq .. 'queue:' .. wid
  -- Junk of another type in an RQ key is deleted, never a reason to fail halfway.
  for _, entry in ipairs(members_if(rq .. 'wip:' .. wid, 'zset')) do  -- '<job id>:<execution id>'
    local job = rq .. 'job:' .. (string.match(entry, '^(.*):[^:]*$') or entry)
    if rcall('PTTL', job) == -1 then rcall('PEXPIRE', job, DEAD_JOB_TTL_MS) end
  end
  for _, kind in ipairs(RQ_QUEUE_KINDS) do
    rcall('DEL', rq .. kind .. ':' .. wid)
  end
  rcall('DEL', queue .. ':intermediate')
  srem_if(rq .. 'queues', queue)
  local by_queue = rq .. 'workers:' .. wid
  local record = rq .. 'worker:'
  for _, member in ipairs(members_if(by_queue, 'set')) do
    if string.sub(member, 1, #record) == record then  -- never a key outside the pool
      rcall('DEL', member, member .. ':executions')
    end
    srem_if(rq .. 'workers', member)
  end
  rcall('DEL', by_queue)
end

local function alive_key(wid)
  return K.prefix .. 'alive:' .. wid
end

-- Refresh the liveness of `wid` for `ttl` ms.
local function beat(wid, incarnation, ttl, now)
  rcall('SET', alive_key(wid), incarnation, 'PX', ttl)
  rcall('ZADD', W.heartbeats, now + ttl, wid)
end

-- Remove `wid`, whose process died, from the pool. Its lease (if any) ends
-- and its token is remembered as ended by a dead worker.
local function bury(wid, now)
  local lease = K.prefix .. 'lease:' .. wid
  local value = rcall('GET', lease)
  if value then
    rcall('ZADD', W.dead, now, token_of(value))
    rcall('DEL', lease)
  end
  rcall('ZREMRANGEBYSCORE', W.dead, '-inf', '(' .. fmt(now - DEAD_LEASE_MEMORY_MS))
  rcall('ZREM', K.deadlines, wid)
  rcall('LREM', K.idle, 0, wid)
  rcall('HDEL', K.workers, wid)
  rcall('SREM', K.draining, wid)
  rcall('ZREM', W.heartbeats, wid)
  rcall('HDEL', W.incarnations, wid)
  rcall('HDEL', W.jobs, wid)
  rcall('HDEL', W.jobs_failed, wid)
  rcall('SREM', W.overflow, wid)
  rcall('HDEL', W.removed, wid)
  rcall('DEL', alive_key(wid))
  forget_rq(wid)
end

-- Take the incarnation holding `wid` out of service for good: once `wid`
-- has left the workers hash, its heartbeat answers 'not registered' instead
-- of registering it again (a loss of Redis data takes this mark too, and
-- then the worker does register again).
local function retire(wid)
  local incarnation = rcall('HGET', W.incarnations, wid)
  if incarnation then rcall('HSET', W.removed, wid, incarnation) end
end

-- Bury up to `limit` workers whose heartbeat lapsed. Returns how many. A
-- retired incarnation keeps its mark: its process may only be paused, and
-- must not register again when it wakes (it clears the mark as it exits).
local function reap(now, limit)
  local due = rcall('ZRANGEBYSCORE', W.heartbeats, '-inf', '(' .. fmt(now), 'LIMIT', 0, limit)
  local count = 0
  for _, wid in ipairs(due) do
    if rcall('EXISTS', alive_key(wid)) == 0 then
      local retired = rcall('HGET', W.removed, wid)
      local retired_held = retired and retired == rcall('HGET', W.incarnations, wid)
      bury(wid, now)
      if retired_held then rcall('HSET', W.removed, wid, retired) end
      count = count + 1
    end
  end
  return count
end
