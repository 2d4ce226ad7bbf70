--[[
  start_job: the fence. A worker asks, just before running a job, whether the
  job's token is the current lease of this worker and this process still
  holds the worker id. The job's nonce must match too, so a stale holder whose
  token was issued again (a rollback) is still refused. Counts the job when it may run.

  KEYS[1]     lease         string 'token|nonce|holder' with a TTL
  KEYS[2]     incarnations  hash   worker id -> incarnation holding the id
  KEYS[3]     dead_leases   zset   token -> ms its worker was found dead
  KEYS[4]     jobs          hash   worker id -> jobs started
  ARGV[1]     worker_id
  ARGV[2]     token         decimal token the job carries
  ARGV[3]     incarnation   of the asking process
  ARGV[4]     nonce         hex nonce of the lease the job carries

  Returns
    {OK, ttl_ms}       run it; the lease holds ttl_ms more (its key's PTTL)
    {NOT_HELD}         the token's lease has ended: refuse
    {WORKER_DEAD}      the token's lease ended because its worker died: refuse
    {UNKNOWN_WORKER}   this process no longer holds the worker id
]]
local rcall = redis.call
-- OK, NOT_HELD, UNKNOWN_WORKER, WORKER_DEAD: generated from redispool/errors.py Code.

local lease, incarnations, dead, jobs = KEYS[1], KEYS[2], KEYS[3], KEYS[4]
local wid, token, incarnation, nonce = ARGV[1], ARGV[2], ARGV[3], ARGV[4]

if rcall('HGET', incarnations, wid) ~= incarnation then return {UNKNOWN_WORKER} end
local value = rcall('GET', lease)
if value then
  local proof = token .. '|' .. nonce .. '|'
  if nonce ~= '' and string.sub(value, 1, #proof) == proof then
    rcall('HINCRBY', jobs, wid, 1)
    return {OK, rcall('PTTL', lease)}
  end
end
if rcall('ZSCORE', dead, token) then return {WORKER_DEAD} end
return {NOT_HELD}
