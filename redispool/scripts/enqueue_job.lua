--[[
  enqueue_job: a lease's holder puts one job on its worker's RQ queue, only
  while the lease is its own (token and nonce). The job record is RQ's own
  hash (RQ's Job.fetch reads it; its data is uncompressed JSON, which RQ
  accepts), written here with its TTL, then the id is pushed on the worker's
  queue. Nothing is written for a lease that has ended.

  KEYS[1]     lease        string 'token|nonce|holder' with a TTL
  KEYS[2]     dead_leases  zset   token -> ms its worker was found dead
  KEYS[3]     job          hash   RQ's job record (<rq prefix>:job:<id>), written here
  KEYS[4]     queue        list   RQ's queue of the worker (<rq prefix>:queue:<worker id>)
  KEYS[5]     queues       set    RQ's set of queue keys (<rq prefix>:queues)
  ARGV[1]     token        decimal token of the caller's lease
  ARGV[2]     nonce        hex nonce of the caller's lease
  ARGV[3]     job_id
  ARGV[4]     ttl          seconds the record lives if no worker starts it (RQ's ttl)
  ARGV[5..n]  field, value, ... of RQ's job hash

  Returns
    {OK}             queued
    {NOT_HELD}       the lease has ended: nothing written
    {WORKER_DEAD}    the lease ended because its worker died: nothing written
]]
local rcall = redis.call
-- OK, NOT_HELD, WORKER_DEAD: generated from redispool/errors.py Code.

local lease, dead, job, queue, queues = KEYS[1], KEYS[2], KEYS[3], KEYS[4], KEYS[5]
local token, nonce, job_id, ttl = ARGV[1], ARGV[2], ARGV[3], tonumber(ARGV[4])

local value = rcall('GET', lease)
local proof = token .. '|' .. nonce .. '|'
if nonce == '' or not value or string.sub(value, 1, #proof) ~= proof then
  if rcall('ZSCORE', dead, token) then return {WORKER_DEAD} end
  return {NOT_HELD}
end
rcall('HSET', job, unpack(ARGV, 5))
if ttl and ttl > 0 then rcall('EXPIRE', job, ttl) end
rcall('SADD', queues, queue)
rcall('RPUSH', queue, job_id)
return {OK}
