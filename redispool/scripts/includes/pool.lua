--[[
  Shared helpers of the pool scripts (inlined where a script says
  `-- @include pool`). They expect a table K of key names built from the
  scripts' common KEYS:
    KEYS[1] prefix     string  'redispool:{pool}:' (lease and wake keys are
                               the prefix plus 'lease:<id>' / 'wake:<ticket>')
    KEYS[2] config     hash    lease_ttl_ms, strategy
    KEYS[3] workers    hash    worker id -> 'host|pid'
    KEYS[4] idle       list    idle worker ids, head is next
    KEYS[5] deadlines  zset    leased worker id -> deadline (server ms)
    KEYS[6] token      string  last fencing token issued
    KEYS[7] draining   set     leased workers that leave at the end of the lease
    KEYS[8] waitq      list    waiter tickets, oldest first
    KEYS[9] waiters    hash    ticket -> 'alive_until_ms|ttl_ms|holder'
  Every script that includes it first calls corrupted() (or wrong_type())
  and answers the error reply 'CORRUPT <key> <what is wrong> ...' without
  changing anything when a key holds what redispool never writes.
]]
local rcall = redis.call

-- Result codes: the table in redispool/errors.py is the source of truth.
local OK, FULL, QUEUED, NOT_HELD, UNKNOWN_WORKER = 0, 1, 2, 3, 4

local DEFAULT_TTL_MS = 10000

local K = {
  prefix = KEYS[1], config = KEYS[2], workers = KEYS[3], idle = KEYS[4],
  deadlines = KEYS[5], token = KEYS[6], draining = KEYS[7], waitq = KEYS[8],
  waiters = KEYS[9],
}

local function fmt(n)
  return string.format('%d', n)
end

-- Server time as {milliseconds, microseconds}.
local function server_time()
  local t = rcall('TIME')
  local sec, usec = tonumber(t[1]), tonumber(t[2])
  return sec * 1000 + math.floor(usec / 1000), sec * 1000000 + usec
end

local function pool_ttl_ms()
  return tonumber(rcall('HGET', K.config, 'lease_ttl_ms')) or DEFAULT_TTL_MS
end

-- Lease TTLs redispool writes: whole ms from 10 ms to 7 days.
local function valid_ttl(value)
  local n = value and string.match(value, '^%d+$') and tonumber(value)
  return n and n >= 10 and n <= 604800000
end

-- The type each common key has when it exists.
local KINDS = {
  {K.config, 'hash'}, {K.workers, 'hash'}, {K.idle, 'list'}, {K.deadlines, 'zset'},
  {K.token, 'string'}, {K.draining, 'set'}, {K.waitq, 'list'}, {K.waiters, 'hash'},
}

local function corrupt(key, what)
  return redis.error_reply('CORRUPT ' .. key .. ' ' .. what .. ' (written by hand?)')
end

-- An error reply naming the first common key of a type redispool never
-- writes, or nil. Scripts call it before any write: Redis keeps the writes
-- of a script that fails halfway, so a late error could lose a worker.
local function wrong_type()
  for _, kind in ipairs(KINDS) do
    local found = rcall('TYPE', kind[1])['ok']
    if found ~= 'none' and found ~= kind[2] then
      return corrupt(kind[1], 'is a ' .. found .. ', not a ' .. kind[2])
    end
  end
  return nil
end

-- An error reply naming the first common key holding a value redispool never
-- writes (wrong types included), or nil. Call before any write. A script
-- about to set lease_ttl_ms or strategy passes the new value, which is then
-- checked instead of the stored one.
local function corrupted(new_ttl, new_strategy)
  local bad = wrong_type()
  if bad then return bad end
  local token = rcall('GET', K.token)
  local config = rcall('HMGET', K.config, 'lease_ttl_ms', 'strategy')
  if token and not (string.match(token, '^%d+$') and #token <= 18) then
    return corrupt(K.token, 'holds ' .. string.format('%q', token) .. ', not a token')
  end
  local ttl, strategy = new_ttl or config[1], new_strategy or config[2]
  if ttl and not valid_ttl(ttl) then
    return corrupt(K.config, 'has lease_ttl_ms ' .. string.format('%q', ttl))
  end
  if strategy and strategy ~= 'lifo' and strategy ~= 'fifo' then
    return corrupt(K.config, 'has strategy ' .. string.format('%q', strategy))
  end
  return nil
end

-- The value of lease key `key`, or nil; an error reply if it is not a string.
local function lease_value(key)
  local kind = rcall('TYPE', key)['ok']
  if kind ~= 'none' and kind ~= 'string' then
    return nil, corrupt(key, 'is a ' .. kind .. ', not a string')
  end
  return rcall('GET', key), nil
end

-- The next fencing token. A missing counter (lost data) restarts from the
-- server clock in microseconds, above every token issued before the loss.
local function issue_token(now_us)
  local token = rcall('INCR', K.token)
  if token == 1 then
    rcall('SET', K.token, fmt(now_us))
    token = rcall('INCR', K.token)
  end
  return token
end

-- Lease worker `wid` to `holder` for `ttl` ms. Returns token, deadline.
local function grant(wid, ttl, holder, now, now_us)
  local token = issue_token(now_us)
  local deadline = now + ttl
  rcall('SET', K.prefix .. 'lease:' .. wid, fmt(token) .. '|' .. holder, 'PX', ttl)
  rcall('ZADD', K.deadlines, deadline, wid)
  return token, deadline
end

-- The earliest lease deadline (server ms), or -1 when nothing is leased.
local function next_deadline()
  local first = rcall('ZRANGE', K.deadlines, 0, 0, 'WITHSCORES')
  if first[2] then return tonumber(first[2]) end
  return -1
end

local function token_of(value)
  local bar = string.find(value, '|', 1, true)
  if bar then return string.sub(value, 1, bar - 1) end
  return value
end

-- True if wake key `wake` is missing or a list (a handoff can be pushed).
local function wakeable(wake)
  local kind = rcall('TYPE', wake)['ok']
  return kind == 'none' or kind == 'list'
end

-- Hand `wid` to the oldest waiter still alive. Returns true if one took it.
local function hand_to_waiter(wid, now, now_us)
  while true do
    local ticket = rcall('LPOP', K.waitq)
    if not ticket then return false end
    local info = rcall('HGET', K.waiters, ticket)
    rcall('HDEL', K.waiters, ticket)
    local wake = K.prefix .. 'wake:' .. ticket
    if info then
      -- a junk entry, or junk in its wake key, counts as a dead waiter
      local alive, ttl, holder = string.match(info, '^(%d+)|(%d+)|(.*)$')
      if alive and tonumber(alive) >= now and valid_ttl(ttl) and wakeable(wake) then
        ttl = tonumber(ttl)
        local token, deadline = grant(wid, ttl, holder, now, now_us)
        rcall('RPUSH', wake, fmt(token) .. '|' .. fmt(deadline) .. '|' .. fmt(ttl) .. '|' .. wid)
        rcall('PEXPIRE', wake, ttl)
        return true
      end
    end
  end
end

-- A worker whose lease ended (or that just joined) goes to the oldest live
-- waiter, else back to the idle list; a draining or unknown worker leaves.
local function release(wid, now, now_us)
  if rcall('SREM', K.draining, wid) == 1 then
    rcall('HDEL', K.workers, wid)
    return
  end
  if rcall('HEXISTS', K.workers, wid) == 0 then return end
  if hand_to_waiter(wid, now, now_us) then return end
  if rcall('HGET', K.config, 'strategy') == 'fifo' then
    rcall('RPUSH', K.idle, wid)
  else
    rcall('LPUSH', K.idle, wid)
  end
end

-- Return the workers of up to `limit` leases past their deadline.
local function sweep(now, now_us, limit)
  local due = rcall('ZRANGEBYSCORE', K.deadlines, '-inf', '(' .. fmt(now), 'LIMIT', 0, limit)
  local count = 0
  for _, wid in ipairs(due) do
    -- a lease key left without a TTL (written by hand) does not hold past its deadline
    if rcall('PTTL', K.prefix .. 'lease:' .. wid) < 0 then
      rcall('ZREM', K.deadlines, wid)
      release(wid, now, now_us)
      count = count + 1
    end
  end
  return count
end

-- Pop idle workers until one is really free, and lease it. Stray ids (not
-- registered, or already leased: a corrupted list) are dropped.
local function take_idle(ttl, holder, now, now_us)
  while true do
    local wid = rcall('LPOP', K.idle)
    if not wid then return nil end
    if rcall('HEXISTS', K.workers, wid) == 1 and not rcall('ZSCORE', K.deadlines, wid) then
      local token, deadline = grant(wid, ttl, holder, now, now_us)
      return {OK, wid, token, deadline, ttl}
    end
  end
end
