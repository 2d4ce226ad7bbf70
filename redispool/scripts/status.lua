--[[
  status: the pool's numbers, read in one atomic step. Changes nothing.

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
local waiting = 0
local tickets = rcall('LRANGE', K.waitq, 0, -1)
for _, ticket in ipairs(tickets) do
  local info = rcall('HGET', K.waiters, ticket)
  local alive = info and tonumber(string.match(info, '^(%d+)|'))
  if alive and alive >= now then waiting = waiting + 1 end
end
return {
  OK,
  rcall('HLEN', K.workers),
  rcall('LLEN', K.idle),
  rcall('ZCARD', K.deadlines),
  waiting,
  rcall('SCARD', K.draining),
  rcall('ZCOUNT', K.deadlines, '-inf', '(' .. fmt(now)),
  now,
  rcall('ZCOUNT', KEYS[10], '-inf', '(' .. fmt(now)),
  rcall('SCARD', KEYS[11]),
}
