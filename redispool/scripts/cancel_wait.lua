--[[
  cancel_wait: a waiter gives up (timeout, interrupt).

  Leaves the queue (its entry stays behind as a dead one, trimmed from the
  head of the queue here or by a later sweep: no walk of the queue). A worker
  handed to it in the meantime is returned to the caller, which keeps it or
  checks it in: it is never left leased to no one.

  KEYS[1..9]  the pool's common keys (see includes/pool.lua)
  KEYS[10]    wake       list   where a worker is handed to this waiter
  ARGV[1]     ticket     this waiter's ticket

  Returns
    {OK, handoff}   handoff 'token|deadline|ttl|nonce|worker_id'
    {FULL}          nothing was handed over
]]
-- @include pool

local wake = KEYS[10]
local ticket = ARGV[1]

local refused = corrupted()
if refused then return refused end

rcall('ZREM', K.waiters, ticket)
local handoff = rcall('LPOP', wake)
rcall('DEL', wake)
trim_waiters(server_time(), 64)
if handoff then return {OK, handoff} end
return {FULL}
