--[[
  reclaim: the sweep. Returns the workers of leases past their deadline,
  trims dead waiters (at most `limit` tickets and `limit` queue entries),
  puts back registered workers that are neither idle nor leased (a lost key),
  and hands idle workers to live waiters.

  Safe to run from any number of hosts at once; a Reaper runs it when an
  expiry notification arrives and on a timer, since notifications can be lost.

  KEYS[1..9]  the pool's common keys (see includes/pool.lua)
  ARGV[1]     limit      most leases to return in this call

  Returns {OK, returned, next_deadline_ms, now_ms, trimmed, repaired}
    trimmed   dead waiter tickets and queue entries dropped
    repaired  workers put back
]]
-- @include pool
-- @include handoff
-- @include repair

local limit = tonumber(ARGV[1])
local refused = corrupted()
if refused then return refused end
local now, now_us = server_time()
local returned = sweep(now, now_us, limit)
local trimmed = trim_waiters(now, limit)
local repaired = repair(now, now_us)
serve_waiters(now, now_us, limit)
return {OK, returned, next_deadline(), now, trimmed, repaired}
