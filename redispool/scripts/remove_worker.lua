--[[
  remove_worker: deregister a worker.

  An idle worker leaves at once. A leased one is marked draining: it counts
  as busy until its lease ends, then it leaves instead of going idle. A
  worker run by a process is taken out of service for good: its heartbeat
  does not register it again, and its process exits.

  KEYS[1..16] the pool's common keys and the workers keys (see
              includes/pool.lua and includes/workers.lua)
  ARGV[1]     worker_id

  Returns
    {OK, 1}              removed now
    {OK, 2}              leased: leaves when its lease ends
    {UNKNOWN_WORKER}     no such worker
]]
-- @include pool
-- @include workers

local wid = ARGV[1]

local refused = corrupted()
if refused then return refused end

if rcall('HEXISTS', K.workers, wid) == 0 then return {UNKNOWN_WORKER} end
retire(wid)
if rcall('ZSCORE', K.deadlines, wid) then
  rcall('SADD', K.draining, wid)
  return {OK, 2}
end
rcall('LREM', K.idle, 0, wid)
rcall('HDEL', K.workers, wid)
return {OK, 1}
