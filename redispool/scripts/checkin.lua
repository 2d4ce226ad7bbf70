--[[
  checkin: end a lease and return its worker.

  Only the current holder can check in: the lease key must exist (its
  deadline has not passed) and carry this token and nonce. The worker goes
  to the oldest live waiter, else back to the idle list (or leaves, if
  draining).
  Expired leases found on the way are returned too.

  KEYS[1]     prefix     'redispool:{pool}:': the script reads and writes the
                         pool's common keys (see includes/pool.lua), the
                         lease <prefix>lease:<worker_id> (string
                         'token|nonce|holder' with a TTL) and
                         <prefix>dead_leases (zset token -> ms its worker
                         was found dead), all named from it
  ARGV[1]     worker_id
  ARGV[2]     token      decimal fencing token of the caller's lease
  ARGV[3]     nonce      hex nonce of the caller's lease
  ARGV[4]     wake       the ticket of the waiter this lease was handed to, whose
                         wake key <prefix>wake:<ticket> still holds the handoff
                         (the waiter took it without a claim); '' for none

  Returns
    {OK}         the worker was returned
    {NOT_HELD}   the lease had already ended; nothing changed for it
    {WORKER_DEAD} it had ended because its worker process died
]]
-- @include pool
-- @include handoff

local wid = ARGV[1]
local lease = K.prefix .. 'lease:' .. wid
local token = ARGV[2]
local nonce = ARGV[3]
-- The handoff of a lease handed over stays in its wake key until here (or its
-- TTL, the lease's own): the waiter made its Lease from it without taking it,
-- a round trip less per handoff. DEL cannot fail, whatever the key holds.
local wake = ARGV[4]
if wake and wake ~= '' then rcall('DEL', K.prefix .. 'wake:' .. wake) end

local value = probe('GET', lease)
if not value or not holds(value, token, nonce) then
  local now, now_us = server_time()
  sweep(now, now_us, 16)
  if probe('ZSCORE', K.dead_leases, token) then return {WORKER_DEAD} end
  return {NOT_HELD}
end
local draining = probe('SISMEMBER', K.draining, wid) == 1
local known = probe('HEXISTS', K.workers, wid) == 1
local waiting = probe('LLEN', K.waitq) > 0
if known and not draining and not waiting then
  -- Back to the idle list: that push is the first write, and fails on a
  -- wrong type having changed nothing; a deadlines of the wrong type then
  -- takes the worker off the head again (the exact undo) and stops.
  probe('LPUSH', K.idle, wid)
  local removed = rpcall('ZREM', K.deadlines, wid)
  if type(removed) == 'table' and removed.err then
    rcall('LPOP', K.idle)
    error(corrupt(K.deadlines, 'holds the wrong type'))
  end
  rcall('DEL', lease)
  return {OK}
end
local plan = release_plan(wid, draining, known, waiting)
-- The first write, and the only one that can fail (deadlines of the wrong
-- type): release_plan read every key the later writes touch.
probe('ZREM', K.deadlines, wid)
-- A worker handed to a waiter has its new lease in the same key: no DEL then.
if not release(wid, nil, nil, plan) then rcall('DEL', lease) end
return {OK}
