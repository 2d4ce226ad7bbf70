--[[
  checkout: lease an idle worker, or queue the caller as a waiter.

  Pops the idle list; when it is empty, first returns the workers of
  expired leases (to the oldest waiters first). A stray id in the idle list
  is dropped, never leased twice.

  KEYS[1..9]  the pool's common keys (see includes/pool.lua)
  ARGV[1]     ttl_ms     integer ms; 0 means the pool's lease_ttl_ms
  ARGV[2]     holder     'host:pid' of the caller, for operators
  ARGV[3]     ticket     waiter ticket; '' means do not queue
  ARGV[4]     alive_ms   integer ms the waiter counts as alive without a tick,
                         at most; the script caps it at the lease ttl
  ARGV[5]     nonce      hex, the caller's random proof of this lease (and of
                         this waiter's, if it queues)

  Returns
    {OK, worker_id, token, deadline_ms, ttl_ms}
    {QUEUED, next_deadline_ms, now_ms, ttl_ms}   queued as waiter `ticket`
    {FULL, next_deadline_ms, now_ms, ttl_ms}     nothing idle, not queued
  next_deadline_ms is the earliest lease deadline, -1 when none.
]]
-- @include pool

local ttl = tonumber(ARGV[1])
local holder = ARGV[2]
local ticket = ARGV[3]
local nonce = ARGV[5]

-- Read every key the path to a lease writes before the first write: a read
-- of the wrong type stops the script. The idle list's head is read, not
-- popped, so that the reads saying it is free to lease come first; the token
-- counter is read only on the paths that may issue a token.
local default_ttl = settings()
local head = probe('LINDEX', K.idle, '0')
local known = head and probe('HEXISTS', K.workers, head) == 1
if head then check_token() end

local now, now_us = server_time()
if ttl <= 0 then ttl = default_ttl end

-- The first write, and the only one that can fail (deadlines of the wrong
-- type): ZADD NX also says whether the head is leased already (a stray copy).
if known and probe('ZADD', K.deadlines, 'NX', fmt(now + ttl), head) == 1 then
  rcall('LPOP', K.idle)
  return lease_to(head, ttl, nonce, holder, now, now_us)
end
local first = probe('ZRANGE', K.deadlines, 0, 0, 'WITHSCORES')
local leased = head and take_idle(ttl, nonce, holder, now, now_us)  -- drops stray heads
if leased then return leased end
local wrote = head ~= nil

-- Nothing idle: return the workers of expired leases, if the earliest
-- deadline has passed.
local next_end = first[2] and tonumber(first[2]) or -1
if next_end >= 0 and next_end < now then
  probe('HLEN', K.workers)
  if K.counter == nil then check_token() end
  wrote = true
  if sweep(now, now_us, 16) > 0 then
    leased = take_idle(ttl, nonce, holder, now, now_us)
    if leased then return leased end
  end
  next_end = next_deadline()
end

if ticket ~= '' then
  probe('LLEN', K.waitq)
  if wrote then probe('ZCARD', K.waiters) end
  local alive = math.min(tonumber(ARGV[4]), ttl)  -- alive_ms; the waiter ticks every ttl/3
  -- (When nothing was written yet, this ZADD is the first write: a waiters of
  -- the wrong type fails it having changed nothing.)
  probe('ZADD', K.waiters, fmt(now + alive), ticket)
  rcall('RPUSH', K.waitq, ticket .. '|' .. fmt(ttl) .. '|' .. nonce .. '|' .. holder)
  return {QUEUED, next_end, now, ttl}
end
return {FULL, next_end, now, ttl}
