--[[
  wait_tick: a waiter's periodic wake-up.

  Returns the workers of expired leases (so a waiter gets the worker of a
  holder that died even when no Reaper runs), then answers whether this
  waiter was handed a worker. A waiter still queued has its liveness
  extended; one that was dropped as dead (it paused past alive_until) takes
  an idle worker or joins the back of the queue. Trims a bounded number of
  dead waiters and hands idle workers to the live waiters at the head (a
  handoff walks a bounded number of entries, so a worker can go idle while a
  live waiter sits behind many dead ones).

  KEYS[1..9]  the pool's common keys (see includes/pool.lua)
  KEYS[10]    wake       list   where a worker is handed to this waiter
  ARGV[1]     ticket     this waiter's ticket
  ARGV[2]     ttl_ms     integer ms, the lease ttl this waiter asked for
  ARGV[3]     holder     'host:pid'
  ARGV[4]     alive_ms   integer ms the waiter counts as alive from now
  ARGV[5]     nonce      hex nonce this waiter queued with

  Returns
    {OK, handoff}                        handoff 'token|deadline|ttl|nonce|worker_id'
    {OK, worker_id, token, deadline_ms, ttl_ms}   took an idle worker
    {QUEUED, next_deadline_ms, now_ms}   still waiting
]]
-- @include pool
-- @include handoff

local wake = KEYS[10]
local ticket = ARGV[1]
local ttl = tonumber(ARGV[2])
local holder = ARGV[3]
local alive_ms = tonumber(ARGV[4])
local nonce = ARGV[5]

local refused = corrupted()
if refused then return refused end

local now, now_us = server_time()
sweep(now, now_us, 64)

local function handed()
  local handoff = rcall('LPOP', wake)
  if handoff then rcall('DEL', wake) end
  return handoff
end

local handoff = handed()
if handoff then return {OK, handoff} end

local queued = rcall('ZSCORE', K.waiters, ticket)
if queued then rcall('ZADD', K.waiters, now + alive_ms, ticket) end  -- keeps its place
trim_waiters(now, 64)
serve_waiters(now, now_us, 16)
handoff = handed()
if handoff then return {OK, handoff} end

if not queued then
  local leased = take_idle(ttl, nonce, holder, now, now_us)
  if leased then return leased end
  rcall('RPUSH', K.waitq, ticket .. '|' .. fmt(ttl) .. '|' .. nonce .. '|' .. holder)
  rcall('ZADD', K.waiters, now + alive_ms, ticket)
end
return {QUEUED, next_deadline(), now}
