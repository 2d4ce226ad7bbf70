--[[
  leave_worker: a worker process leaves the pool.

  Acts only for the incarnation that holds the id.
    mode 'drain'  an idle worker leaves now; a leased one is marked draining
                  and leaves when its lease ends (checkin or expiry)
    mode 'idle'   leaves only if idle (an overflow worker done waiting)
  Either way, once it leaves, its heartbeat no longer registers it again.
    mode 'exit'   the process is exiting: everything about the worker goes;
                  a lease still held ends as "worker dead" (a retired
                  incarnation already buried only clears its 'removed' mark)

  KEYS[1..16] the pool's common keys and the workers keys (see
              includes/pool.lua and includes/workers.lua)
  ARGV[1]     worker_id
  ARGV[2]     incarnation
  ARGV[3]     mode        'drain' | 'idle' | 'exit'

  Returns
    {OK, 1}            the worker has left
    {OK, 2}            leased: it leaves when the lease ends ('drain')
    {FULL}             leased: it stays ('idle')
    {UNKNOWN_WORKER}   this incarnation does not hold the id
]]
-- @include pool
-- @include workers

local wid, incarnation, mode = ARGV[1], ARGV[2], ARGV[3]

local refused = corrupted()
if refused then return refused end

if rcall('HGET', W.incarnations, wid) ~= incarnation then
  -- a retired incarnation buried while it was paused: its exit clears the mark it left
  if mode == 'exit' and rcall('HGET', W.removed, wid) == incarnation then
    rcall('HDEL', W.removed, wid)
  end
  return {UNKNOWN_WORKER}
end
local now = server_time()
if mode == 'exit' then
  bury(wid, now)
  return {OK, 1}
end
if mode == 'idle' and rcall('ZSCORE', K.deadlines, wid) then return {FULL} end
retire(wid)
if rcall('HEXISTS', K.workers, wid) == 0 then return {OK, 1} end
if rcall('ZSCORE', K.deadlines, wid) then
  rcall('SADD', K.draining, wid)
  return {OK, 2}
end
rcall('LREM', K.idle, 0, wid)
rcall('HDEL', K.workers, wid)
rcall('SREM', W.overflow, wid)
return {OK, 1}
