--[[
  checkout: lease an idle worker, or queue the caller as a waiter.

  Pops the idle list; when it is empty, first returns the workers of
  expired leases (to the oldest waiters first). A stray id in the idle list
  is dropped, never leased twice.

  KEYS[1]     prefix     'redispool:{pool}:': the script reads and writes the
                         pool's common keys (see includes/pool.lua) and
                         lease keys, all named from it
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
-- @include handoff

local ttl = tonumber(ARGV[1])
local holder = ARGV[2]
local ticket = ARGV[3]
local nonce = ARGV[5]

-- The checks of the settings and the clock come first; then the idle list is
-- popped: the first write, which fails on a wrong type having changed
-- nothing. Until the lease is written, a check that fails on the popped
-- worker's way (a junk counter, workers or deadlines of the wrong type) puts
-- it back where it was (unpop_idle, the exact undo) before the script stops.
local default_ttl = settings()
local now, now_us = server_time()
if ttl <= 0 then ttl = default_ttl end

local head = pop_idle()
if head then
  local ok, free = pcall(vet_popped, head, now + ttl)
  if not ok then
    unpop_idle(head)
    error(free)
  end
  if free then return lease_to(head, ttl, nonce, holder, now, now_us) end
end
-- The head was a stray copy (not registered, or leased already): dropped.
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
