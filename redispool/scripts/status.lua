--[[
  status: the pool's numbers, read in one atomic step. Changes nothing.
  O(log n) whatever the pool or its queue hold.

  KEYS[1..9]  the pool's common keys (see includes/pool.lua)
  KEYS[10]    heartbeats zset   process-run worker id -> heartbeat deadline (ms)
  KEYS[11]    overflow   set    overflow worker ids

  Returns {OK, size, idle, busy, waiting, draining, expired, now_ms, dead, overflow}
    size     registered workers (a draining worker counts until it leaves)
    busy     leased workers, including leases past their deadline that no
             sweep has returned yet (counted again in `expired`)
    waiting  live waiters
    dead     worker processes whose heartbeat lapsed, not yet buried
    overflow registered overflow workers
]]
-- @include pool

local refused = corrupted()
if refused then return refused end

local now = server_time()
return {
  OK,
  rcall('HLEN', K.workers),
  rcall('LLEN', K.idle),
  rcall('ZCARD', K.deadlines),
  rcall('ZCOUNT', K.waiters, now, '+inf'),
  rcall('SCARD', K.draining),
  rcall('ZCOUNT', K.deadlines, '-inf', '(' .. fmt(now)),
  now,
  rcall('ZCOUNT', KEYS[10], '-inf', '(' .. fmt(now)),
  rcall('SCARD', KEYS[11]),
}
