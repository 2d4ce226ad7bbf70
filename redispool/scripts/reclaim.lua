--[[
  reclaim: the sweep. Returns the workers of leases past their deadline.

  Safe to run from any number of hosts at once; a Reaper runs it when an
  expiry notification arrives and on a timer, since notifications can be lost.

  KEYS[1..9]  the pool's common keys (see includes/pool.lua)
  ARGV[1]     limit      most leases to return in this call

  Returns {OK, returned, next_deadline_ms, now_ms}
]]
-- @include pool

local limit = tonumber(ARGV[1])
local refused = corrupted()
if refused then return refused end
local now, now_us = server_time()
local returned = sweep(now, now_us, limit)
return {OK, returned, next_deadline(), now}
