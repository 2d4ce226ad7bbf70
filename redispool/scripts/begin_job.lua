--[[
  begin_job: the worker's fence at the start of a job, and RQ's "started"
  bookkeeping, in one step. The job runs only if the token and nonce in its
  meta are its worker's current lease and this process still holds the worker
  id; then the record is marked started (status, started_at, worker_name, no
  TTL), its execution entered in the StartedJobRegistry, and the job counted.
  A job this process may not run because another incarnation holds the id is
  given back at the head of the queue, untouched. On every outcome the id
  leaves RQ's intermediate queue, where the worker's wait moved it (a wait
  whose reply was lost leaves it there, for the worker to take up again). A
  registry or counter of the wrong type stops the script (its WRONGTYPE
  error) having written nothing.

  KEYS[1]     lease         string 'token|nonce|holder' with a TTL
  KEYS[2]     incarnations  hash   worker id -> incarnation holding the id
  KEYS[3]     dead_leases   zset   token -> ms its worker was found dead
  KEYS[4]     jobs          hash   worker id -> jobs started
  KEYS[5]     job           hash   RQ's job record
  KEYS[6]     queue         list   RQ's queue of the worker (for the give-back)
  KEYS[7]     wip           zset   RQ's StartedJobRegistry of the queue
  KEYS[8]     intermediate  list   RQ's intermediate queue of the queue ('<queue>:intermediate')
  ARGV[1]     worker_id
  ARGV[2]     incarnation   of the asking process
  ARGV[3]     job_id
  ARGV[4]     execution     RQ's registry entry of this run, '<job id>:<execution id>'
  ARGV[5]     started_at    RQ's timestamp text (the worker's clock, as RQ's is)
  ARGV[6]     now           seconds since the epoch (the registry's score base)
  ARGV[7]     worker_name   RQ's name of the worker
  ARGV[8]     token_meta    the key of job.meta holding the lease's token (jobs.TOKEN_META)
  ARGV[9]     nonce_meta    the key of job.meta holding its nonce (jobs.NONCE_META)

  Returns
    {OK, ttl_ms, token, nonce, result_ttl, failure_ttl, data, timeout, callbacks, webhooks}
                     run it; the lease holds ttl_ms more (its key's PTTL); the
                     record's fields ('' where absent); callbacks: the callback
                     names joined (empty if none)
    {NOT_HELD, -1, token, nonce, result_ttl, failure_ttl}     the lease has ended,
                     or the job carries no lease (token not decimal, or no nonce): refuse
    {WORKER_DEAD, -1, token, nonce, result_ttl, failure_ttl}  the lease ended because
                     its worker died: refuse
    {UNKNOWN_WORKER} this process no longer holds the worker id: given back
    {NO_JOB}         not in the intermediate queue (withdrawn by its client), or no
                     such job record (expired, deleted): drop the id
]]
-- @include kinds
local rcall = redis.call
-- OK, NOT_HELD, UNKNOWN_WORKER, WORKER_DEAD, NO_JOB: generated from redispool/errors.py Code.

local lease, incarnations, dead, jobs = KEYS[1], KEYS[2], KEYS[3], KEYS[4]
local job, queue, wip, taken = KEYS[5], KEYS[6], KEYS[7], KEYS[8]
local wid, incarnation, job_id, execution = ARGV[1], ARGV[2], ARGV[3], ARGV[4]
local started_at, now, worker_name = ARGV[5], tonumber(ARGV[6]), ARGV[7]
local token_meta, nonce_meta = ARGV[8], ARGV[9]

-- The give-back and the take-out below write lists: checked before any write.
local bad = mistyped({{taken, 'list'}, {queue, 'list'}})
if bad then return bad end
-- A job that is not in the intermediate queue was withdrawn by its client
-- (or never taken by a wait): it never starts.
if not rcall('LPOS', taken, job_id) then return {NO_JOB} end
-- Out of the intermediate queue: after any of the checks below, or the writes.
local function handled() rcall('LREM', taken, 1, job_id) end

if rcall('HGET', incarnations, wid) ~= incarnation then
  handled()
  rcall('LPUSH', queue, job_id)
  return {UNKNOWN_WORKER}
end
local f = rcall('HMGET', job, 'data', 'meta', 'timeout', 'success_callback_name',
                'failure_callback_name', 'stopped_callback_name', 'webhooks', 'result_ttl',
                'failure_ttl')
if not f[1] then handled() return {NO_JOB} end
local ttls = {f[8] or '', f[9] or ''}

local token, nonce = '', ''
local decoded, meta = pcall(cjson.decode, f[2] or '')
if decoded and type(meta) == 'table' then
  local t, n = meta[token_meta], meta[nonce_meta]
  if type(t) == 'number' then token = string.format('%.0f', t)
  elseif type(t) == 'string' then token = t end
  if type(n) == 'string' then nonce = n end
end
if not string.match(token, '^%d+$') or nonce == '' then
  handled()
  return {NOT_HELD, -1, token, nonce, ttls[1], ttls[2]}
end

local value = rcall('GET', lease)
local proof = token .. '|' .. nonce .. '|'
if not value or string.sub(value, 1, #proof) ~= proof then
  local verdict = NOT_HELD
  if rcall('ZSCORE', dead, token) then verdict = WORKER_DEAD end
  handled()
  return {verdict, -1, token, nonce, ttls[1], ttls[2]}
end

-- The writes that can fail on a key of the wrong type come first: the ZADD
-- fails having written nothing, the count is undone exactly if it fails; the
-- record is a hash (read above), so marking it started cannot fail.
local timeout = tonumber(f[3] or '')
local score = '+inf'
if timeout == nil then score = now + 180 + 60 elseif timeout >= 0 then score = now + timeout + 60 end
rcall('ZADD', wip, score, execution)
local counted = redis.pcall('HINCRBY', jobs, wid, 1)
if type(counted) == 'table' and counted.err then
  rcall('ZREM', wip, execution)
  return counted
end
handled()
rcall('HSET', job, 'status', 'started', 'started_at', started_at, 'last_heartbeat', started_at,
      'worker_name', worker_name)
rcall('PERSIST', job)
local callbacks = (f[4] or '') .. (f[5] or '') .. (f[6] or '')
return {OK, rcall('PTTL', lease), token, nonce, ttls[1], ttls[2], f[1], f[3] or '', callbacks,
        f[7] or ''}
