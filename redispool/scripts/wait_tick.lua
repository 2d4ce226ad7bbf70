--[[
  wait_tick: a waiter's periodic wake-up.

  Returns the workers of expired leases (so a waiter gets the worker of a
  holder that died even when no Reaper runs), then answers whether this
  waiter was handed a worker. A waiter still queued has its liveness
  extended; one that was dropped as dead (it paused past alive_until) takes
  an idle worker or joins the back of the queue.

  KEYS[1..9]  the pool's common keys (see includes/pool.lua)
  KEYS[10]    wake       list   where a worker is handed to this waiter
  ARGV[1]     ticket     this waiter's ticket
  ARGV[2]     ttl_ms     integer ms, the lease ttl this waiter asked for
  ARGV[3]     holder     'host:pid'
  ARGV[4]     alive_ms   integer ms the waiter counts as alive from now

  Returns
    {OK, handoff}                        handoff 'token|deadline|ttl|worker_id'
    {OK, worker_id, token, deadline_ms, ttl_ms}   took an idle worker
    {QUEUED, next_deadline_ms, now_ms}   still waiting
]]
-- @include pool

local wake = KEYS[10]
local ticket = ARGV[1]
local ttl = tonumber(ARGV[2])
local holder = ARGV[3]
local alive_ms = tonumber(ARGV[4])

local refused = corrupted()
if refused then return refused end

local now, now_us = server_time()
sweep(now, now_us, 64)

local handoff = rcall('LPOP', wake)
if handoff then
  rcall('DEL', wake)
  return {OK, handoff}
end

local alive = fmt(now + alive_ms) .. '|' .. fmt(ttl) .. '|' .. holder
if rcall('HEXISTS', K.waiters, ticket) == 0 then
  local leased = take_idle(ttl, holder, now, now_us)
  if leased then return leased end
  rcall('RPUSH', K.waitq, ticket)
end
rcall('HSET', K.waiters, ticket, alive)
return {QUEUED, next_deadline(), now}
