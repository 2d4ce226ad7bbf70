--[[
  Shared helpers of the pool scripts (a script that says `-- @include pool`
  uses them; they are defined once in the library, see redispool/scripts.py).
  They read a table K of key names, bound at each call from KEYS[1], the
  pool's prefix (bind_pool): the names below are the prefix plus the part.
  A script that lists the other common keys in KEYS too (for Cluster and
  ACL checks before it runs) lists these same names, in this order:
    KEYS[1] prefix     string  'redispool:{pool}:' (lease and wake keys are
                               the prefix plus 'lease:<id>' / 'wake:<ticket>')
    KEYS[2] config     hash    lease_ttl_ms, strategy
    KEYS[3] workers    hash    worker id -> 'host|pid'
    KEYS[4] idle       list    idle worker ids, pushed at the head; a lifo
                               pool pops the head, a fifo pool the tail
    KEYS[5] deadlines  zset    leased worker id -> deadline (server ms)
    KEYS[6] token      string  last fencing token issued
    KEYS[7] draining   set     leased workers that leave at the end of the lease
    KEYS[8] waitq      list    'ticket|ttl_ms|nonce|holder' per queued waiter,
                               oldest first; an entry whose ticket is not in
                               waiters is a dead waiter's, skipped and trimmed
    KEYS[9] waiters    zset    ticket -> alive_until (server ms): the waiters
                               still queued, so ZCOUNT gives the live ones
  A lease key holds 'token|nonce|holder': the nonce is the client's random
  proof of this one lease, compared with the token wherever a holder acts.
  Redis keeps the writes of a script that fails halfway, so every check
  comes before a script's first write: a key holding what redispool never
  writes stops the script with the error 'CORRUPT <key> <what is wrong> ...'
  and changes nothing. Most scripts call corrupted() first, which checks
  every common key. The hot paths (checkout, checkin, renew, cancel_wait)
  instead probe only the keys their path will write, with reads that fail on
  a wrong type (probe(), settings(), check_token(), release_plan()), and let
  the one write that could still fail on a wrong type come first (through
  probe(): a write that fails has changed nothing). Each redis.call costs the
  server's one thread some 4,600 instructions (callgrind, Redis 7.0): the hot
  paths make only the calls their checks need.
]]
-- @include kinds

-- redis.call and redis.pcall, bound at each call (a library may not touch
-- them, nor any global, at load).
local rcall, rpcall, rtype

-- Result codes (OK, FULL, QUEUED, NOT_HELD, UNKNOWN_WORKER, ...): generated from the one
-- table, redispool/errors.py Code, and written in front of the library (scripts.py).

local DEFAULT_TTL_MS = 10000
-- Tokens stay below 2^53: Lua numbers are doubles, exact up to there.
local MAX_TOKEN = 9007199254740991

local K = {}

-- K of a call whose KEYS[1] is not a pool's prefix (renew's KEYS, which name
-- no pool): any use stops the script, which must never fall back on the names
-- of the pool served last (another tenant's keys, not named in KEYS). Made at
-- the first such call: a library may not call setmetatable at load.
local no_pool = nil
local function not_a_pool()
  if not no_pool then
    local function refuse(_, part)
      error(redis.error_reply('ERR KEYS[1] is not a pool prefix (the script asked for its '
        .. tostring(part) .. ')'))
    end
    no_pool = setmetatable({}, {__index = refuse, __newindex = refuse})
  end
  return no_pool
end

-- The key names of each pool prefix met lately, made once per pool: a key
-- passed in KEYS costs the server some 1,500 instructions (callgrind, Redis
-- 7.0), a cached name nothing, so the hot paths pass the prefix alone.
local POOLS_KEPT = 1024
local pools, pools_kept = {}, 0

-- Point K at this call's pool (KEYS[1], its prefix); every operation starts
-- here. The other common keys a script lists in KEYS are the same names.
local function bind_pool()
  rcall, rpcall, rtype = redis.call, redis.pcall, type  -- type: a local is cheaper
  local prefix = KEYS[1]
  local k = pools[prefix]
  if not k then
    if string.sub(prefix, -1) ~= ':' then  -- not a prefix (renew's KEYS): K unused
      K = not_a_pool()
      return
    end
    if pools_kept >= POOLS_KEPT then pools, pools_kept = {}, 0 end
    k = {prefix = prefix, config = prefix .. 'config', workers = prefix .. 'workers',
         idle = prefix .. 'idle', deadlines = prefix .. 'deadlines', token = prefix .. 'token',
         draining = prefix .. 'draining', waitq = prefix .. 'waitq',
         waiters = prefix .. 'waiters', dead_leases = prefix .. 'dead_leases'}
    pools[prefix], pools_kept = k, pools_kept + 1
  end
  K = k
  K.strategy = nil  -- the pool's strategy once read in this call
  K.counter = nil  -- the token counter's value once read in this call (false: missing)
  K.count = nil  -- ... and as a number (0: missing)
end

-- A number as a decimal string. Numbers given to redis.call are formatted
-- with '%.17g', several times dearer than '%d': the hot paths pass strings.
local function fmt(n)
  return string.format('%d', n)
end

-- Server time as {milliseconds, microseconds}.
-- The last reading's microseconds as a decimal when TIME's two parts
-- spell it (usec of 6 digits), else nil: a token equal to the clock is then
-- written without a string.format.
local now_us_text, now_us_read = nil, nil
local function server_time()
  local t = rcall('TIME')
  local sec, usec = tonumber(t[1]), tonumber(t[2])
  now_us_read = sec * 1000000 + usec
  now_us_text = #t[2] == 6 and t[1] .. t[2] or nil
  return sec * 1000 + (usec - usec % 1000) / 1000, now_us_read
end

-- Lease TTLs redispool writes: whole ms from 10 ms to 7 days. The number, or nil.
-- The last TTL found valid is kept with its number (most pools on a server
-- share one setting): checking it again is one string comparison.
local seen_ttl, seen_ttl_n = nil, nil
local function valid_ttl(value)
  if value == seen_ttl then return seen_ttl_n end
  local n = value and string.match(value, '^%d+$') and tonumber(value)
  if n and n >= 10 and n <= 604800000 then
    seen_ttl, seen_ttl_n = value, n
    return n
  end
  return nil
end

-- The type each common key has when it exists.
local KINDS = {
  {'config', 'hash'}, {'workers', 'hash'}, {'idle', 'list'}, {'deadlines', 'zset'},
  {'token', 'string'}, {'draining', 'set'}, {'waitq', 'list'}, {'waiters', 'zset'},
}

-- `value` as a number if it is a token counter redispool writes (decimal,
-- below 2^53), else nil.
local function valid_token(value)
  local n = #value <= 16 and string.match(value, '^%d+$') and tonumber(value)
  if n and n <= MAX_TOKEN then return n end
  return nil
end

local function corrupt(key, what)
  return redis.error_reply('CORRUPT ' .. key .. ' ' .. what .. ' (written by hand?)')
end

-- An error reply naming the first common key of a type redispool never
-- writes, or nil. Scripts call it before any write: Redis keeps the writes
-- of a script that fails halfway, so a late error could lose a worker.
local function wrong_type()
  for _, kind in ipairs(KINDS) do
    local bad = wrong_kind(K[kind[1]], kind[2])
    if bad then return bad end
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
  if token and not valid_token(token) then
    return corrupt(K.token, 'holds ' .. string.format('%q', token) .. ', not a token')
  end
  local ttl, strategy = new_ttl or config[1], new_strategy or config[2]
  if ttl and not valid_ttl(ttl) then
    return corrupt(K.config, 'has lease_ttl_ms ' .. string.format('%q', ttl))
  end
  if strategy and strategy ~= 'lifo' and strategy ~= 'fifo' then
    return corrupt(K.config, 'has strategy ' .. string.format('%q', strategy))
  end
  K.strategy = strategy or 'lifo'
  return nil
end

-- `cmd` on `key`, a read; a key of the wrong type stops the script, naming it.
local function probe(cmd, key, ...)
  local value = rpcall(cmd, key, ...)
  if rtype(value) == 'table' and value.err then
    if string.find(value.err, 'WRONGTYPE', 1, true) then
      error(corrupt(key, 'holds the wrong type'))
    end
    error(value)  -- not about the key (an ACL refusal): as Redis said it
  end
  return value
end

-- The pool's settings, checked: lease ttl (ms) and strategy.
local function settings()
  local config = probe('HMGET', K.config, 'lease_ttl_ms', 'strategy')
  local ttl = config[1] and valid_ttl(config[1])
  if config[1] and not ttl then
    error(corrupt(K.config, 'has lease_ttl_ms ' .. string.format('%q', config[1])))
  end
  if config[2] and config[2] ~= 'lifo' and config[2] ~= 'fifo' then
    error(corrupt(K.config, 'has strategy ' .. string.format('%q', config[2])))
  end
  K.strategy = config[2] or 'lifo'
  return ttl or DEFAULT_TTL_MS, K.strategy
end

-- Idle workers are pushed at the head (a return needs no look at the
-- strategy); a lifo pool pops the head (the last returned), a fifo pool the
-- tail (the one idle longest). An idle list of the wrong type stops the
-- script, having changed nothing.
-- (The tail is read and removed with LINDEX and LREM, not RPOP: pool
-- users' ACL rules, written by operators from redispool.acl, have no RPOP.)
local function pop_idle()
  if not K.strategy then settings() end
  if K.strategy ~= 'fifo' then return probe('LPOP', K.idle) end
  local wid = probe('LINDEX', K.idle, '-1')
  if wid then rcall('LREM', K.idle, '-1', wid) end
  return wid
end

-- Put `wid`, just popped by pop_idle(), back where it was: the exact undo.
local function unpop_idle(wid)
  if K.strategy == 'fifo' then rcall('RPUSH', K.idle, wid) else rcall('LPUSH', K.idle, wid) end
end

-- The counter this library wrote last, and its number: read back unchanged
-- it is valid by construction (one string comparison instead of a parse).
local wrote_counter, wrote_count = nil, nil

-- Stop the script if the token counter cannot grow into a token.
local function check_token()
  local token = probe('GET', K.token)
  local count = token and (token == wrote_counter and wrote_count or valid_token(token))
  if token and not count then
    error(corrupt(K.token, 'holds ' .. string.format('%q', token) .. ', not a token'))
  end
  K.counter, K.count = token or false, count or 0
end

-- The next fencing token: the larger of the counter + 1 and the server clock
-- in microseconds. A counter that is missing or old (a snapshot restored, an
-- AOF that lost its last second, a replica promoted, a hand SET) is never
-- trusted alone: while the counter is not ahead of the clock, every token
-- issued before the loss was the clock of its moment, which the clock has
-- passed since (README: "Tokens across a rollback", the clock assumption).
local function issue_token(now_us)
  local count = K.count
  if K.counter == nil then count = tonumber(rcall('GET', K.token)) end
  local token = (count or 0) + 1
  if token <= now_us then
    token = now_us
    K.counter = now_us == now_us_read and now_us_text or fmt(token)
  else
    K.counter = fmt(token)
  end
  K.count = token
  rcall('SET', K.token, K.counter)
  wrote_counter, wrote_count = K.counter, token
  return token
end

-- The last lease ttl written, as a number and as its decimal (most leases
-- of a server share one ttl: no string.format per lease).
local ttl_n, ttl_s = nil, nil

-- Write the lease of worker `wid` to `holder` for `ttl` ms under `nonce`
-- (its deadline is the caller's to record). Returns its token.
local function write_lease(wid, ttl, nonce, holder, now_us)
  local token = issue_token(now_us)
  if ttl ~= ttl_n then ttl_n, ttl_s = ttl, fmt(ttl) end
  rcall('SET', K.prefix .. 'lease:' .. wid, K.counter .. '|' .. nonce .. '|' .. holder, 'PX', ttl_s)
  return token
end

-- Lease worker `wid` to `holder` for `ttl` ms under `nonce`. Returns token, deadline.
local function grant(wid, ttl, nonce, holder, now, now_us)
  local token = write_lease(wid, ttl, nonce, holder, now_us)
  local deadline = now + ttl
  rcall('ZADD', K.deadlines, deadline, wid)
  return token, deadline
end

-- The reply {OK, wid, token, deadline, ttl} of a checkout that leased `wid`,
-- whose deadline (now + ttl) is in deadlines already.
local function lease_to(wid, ttl, nonce, holder, now, now_us)
  return {OK, wid, write_lease(wid, ttl, nonce, holder, now_us), now + ttl, ttl}
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

-- True if lease value `value` ('token|nonce|holder') is the lease of `token`
-- and `nonce`: a stale holder whose token was issued again still fails.
local function holds(value, token, nonce)
  local proof = token .. '|' .. nonce .. '|'
  return nonce ~= '' and string.sub(value, 1, #proof) == proof
end
