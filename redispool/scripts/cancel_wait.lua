--[[
  cancel_wait: a waiter gives up (timeout, interrupt).

  Leaves the queue (its entry stays behind as a dead one, trimmed from the
  head of the queue here or by a later sweep: no walk of the queue). A worker
  handed to it in the meantime is returned to the caller, which keeps it or
  checks it in: it is never left leased to no one. Called too by a waiter
  that saw its handoff, to take it (then nothing is trimmed: the handoff
  walked past the dead entries before it).

  KEYS[1]     prefix     'redispool:{pool}:': the script reads and writes the
                         pool's common keys (see includes/pool.lua) and the
                         wake key <prefix>wake:<ticket> (list: where a worker
                         is handed to this waiter), all named from it
  ARGV[1]     ticket     this waiter's ticket

  Returns
    {OK, handoff}   handoff 'token|deadline|ttl|nonce|worker_id'
    {FULL}          nothing was handed over
]]
-- @include pool
-- @include handoff

local ticket = ARGV[1]
local wake = K.prefix .. 'wake:' .. ticket

-- A waiter claiming its handoff is every contended cycle's third call: it
-- reads and writes only waiters and its wake key, checked before the first
-- write (LPOP, which fails on a wrong type having written nothing).
local queued = probe('ZSCORE', K.waiters, ticket)
local handoff = probe('LPOP', wake)
if handoff then
  rcall('DEL', wake)
  if queued then rcall('ZREM', K.waiters, ticket) end
  return {OK, handoff}
end
-- Giving up: leave the queue, and trim dead waiters from its head.
probe('LLEN', K.waitq)
if queued then rcall('ZREM', K.waiters, ticket) end
trim_waiters(server_time(), 64)
return {FULL}
