--[[
  add_worker: register a worker id, idle. Idempotent.

  A new worker goes to the oldest live waiter, else to the idle list. A known
  worker has its host/pid updated and any pending removal cancelled; if it is
  neither idle nor leased (lost by a bug or a corrupted list, or left with a
  deadline still ahead but no lease key) it is returned.
  Creates the pool's settings with defaults when it has none.

  KEYS[1..9]  the pool's common keys (see includes/pool.lua)
  ARGV[1]     worker_id
  ARGV[2]     meta       'host|pid', either part may be empty
  ARGV[3]     ttl_ms     default lease_ttl_ms for a new pool
  ARGV[4]     strategy   default strategy for a new pool: 'lifo' | 'fifo'

  Returns {OK, added}: added is 1 for a new worker, 0 for a known one.
]]
-- @include pool
-- @include handoff

local wid = ARGV[1]
local meta = ARGV[2]

local refused = corrupted()
if refused then return refused end

rcall('HSETNX', K.config, 'lease_ttl_ms', ARGV[3])
rcall('HSETNX', K.config, 'strategy', ARGV[4])

local now, now_us = server_time()
if rcall('HSET', K.workers, wid, meta) == 1 then
  release(wid, now, now_us, release_plan(wid))
  return {OK, 1}
end
rcall('SREM', K.draining, wid)
local leased = rcall('ZSCORE', K.deadlines, wid)
-- A deadline still ahead with no lease key holding is no lease (a checkout
-- refused by an ACL after its first write leaves one): the worker is returned
-- now. (A deadline behind is an ended lease: the sweep returns its worker.)
if leased and tonumber(leased) >= now and rcall('PTTL', K.prefix .. 'lease:' .. wid) < 0 then
  rcall('ZREM', K.deadlines, wid)
  leased = false
end
if not leased and not rcall('LPOS', K.idle, wid) then
  release(wid, now, now_us, release_plan(wid))
end
return {OK, 0}
