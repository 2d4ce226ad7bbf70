--[[
  finish_job: the worker writes a job's end the RQ way (status, ended_at, the
  finished or failed registry, the record's TTL, an entry in RQ 3.0's results
  stream) and takes its execution out of the StartedJobRegistry. A return
  value counts only if the lease (token and nonce) still holds now, in the
  same step: a job that returned after its lease ended is written as failed
  with the verdict NOT_HELD (or WORKER_DEAD), never as the holder's result.
  A failure with a verdict (an errors.py code) carries it in the job's meta
  and in the results entry.

  KEYS[1]     lease         string 'token|nonce|holder' with a TTL
  KEYS[2]     dead_leases   zset   token -> ms its worker was found dead
  KEYS[3]     job           hash   RQ's job record
  KEYS[4]     wip           zset   RQ's StartedJobRegistry of the queue
  KEYS[5]     finished      zset   RQ's FinishedJobRegistry of the queue
  KEYS[6]     failed        zset   RQ's FailedJobRegistry of the queue
  KEYS[7]     results       stream RQ's results of the job (<rq prefix>:results:<id>)
  KEYS[8]     jobs_failed   hash   worker id -> jobs failed or refused
  ARGV[1]     worker_id
  ARGV[2]     token         decimal token of the job's lease
  ARGV[3]     nonce         its nonce
  ARGV[4]     job_id
  ARGV[5]     execution     the StartedJobRegistry entry to remove ('' if none)
  ARGV[6]     kind          'returned' or 'failed'
  ARGV[7]     value         RQ's return_value field (base64 of JSON), for 'returned'
  ARGV[8]     exc           RQ's exc_string field (base64 of zlib), for 'failed'
  ARGV[9]     lost_exc      the exc_string written if a return came after the lease ended
  ARGV[10]    verdict       errors.py code of the worker's verdict, '' if none
  ARGV[11]    ended_at      RQ's timestamp text
  ARGV[12]    now           seconds since the epoch (the registries' score base)
  ARGV[13]    result_ttl    seconds a success is kept (-1: for ever, 0: not kept)
  ARGV[14]    failure_ttl   seconds a failure is kept
  ARGV[15]    worker_name   RQ's name of the worker
  ARGV[16]    verdict_meta  the key of job.meta (and of the results entry) for the
                            verdict (jobs.VERDICT_META)

  Returns
    {OK}           written as given
    {NOT_HELD}     a return came after the lease ended: written as failed
    {WORKER_DEAD}  the same, its worker having died
    error CORRUPT  a key it writes has the wrong type; nothing was written
]]
-- @include kinds
local rcall = redis.call
-- OK, NOT_HELD, WORKER_DEAD: generated from redispool/errors.py Code.

local lease, dead, job, wip = KEYS[1], KEYS[2], KEYS[3], KEYS[4]
local finished, failed, results, jobs_failed = KEYS[5], KEYS[6], KEYS[7], KEYS[8]
local wid, token, nonce, job_id, execution = ARGV[1], ARGV[2], ARGV[3], ARGV[4], ARGV[5]
local kind, exc, verdict = ARGV[6], ARGV[8], ARGV[10]
local ended_at, now = ARGV[11], tonumber(ARGV[12])
local result_ttl, failure_ttl, worker_name = tonumber(ARGV[13]), tonumber(ARGV[14]), ARGV[15]
local verdict_meta = ARGV[16]

-- Redis keeps the writes of a script that stops halfway: a key of the wrong
-- type (written by hand?) is named before the first write, and nothing is
-- written; the job stays started until it is repaired.
local bad = mistyped({{wip, 'zset'}, {job, 'hash'}, {finished, 'zset'}, {failed, 'zset'},
                      {results, 'stream'}, {jobs_failed, 'hash'}})
if bad then return bad end

local code = OK
if kind == 'returned' then
  local value = rcall('GET', lease)
  local proof = token .. '|' .. nonce .. '|'
  if nonce == '' or not value or string.sub(value, 1, #proof) ~= proof then
    code = NOT_HELD
    if rcall('ZSCORE', dead, token) then code = WORKER_DEAD end
    kind, exc, verdict = 'failed', ARGV[9], tostring(code)
  end
end
if execution ~= '' then rcall('ZREM', wip, execution) end

-- The job's meta text with the verdict added as its last entry. The
-- enqueuer's JSON is kept as it was written, never decoded and encoded again:
-- cjson writes numbers back with 14 digits (a large id would change) and
-- cannot encode the Infinity RQ's JSONSerializer writes for float('inf')
-- (the script would stop halfway). A meta that is not a JSON object becomes
-- the verdict alone. JSON readers (Python's, cjson) take the last of a
-- repeated key, so a verdict already there is replaced.
local function with_verdict(text)
  local entry = cjson.encode(verdict_meta) .. ':' .. string.format('%d', tonumber(verdict))
  local decoded, meta = pcall(cjson.decode, text or '')
  local body = decoded and type(meta) == 'table' and string.match(text, '^%s*{(.*)}%s*$')
  if not body or not string.find(body, '%S') then return '{' .. entry .. '}' end
  return '{' .. body .. ',' .. entry .. '}'
end

local function keep(key, ttl)
  if ttl == -1 then rcall('PERSIST', key) elseif ttl > 0 then rcall('EXPIRE', key, ttl) end
end
local function score(ttl)
  if ttl == -1 then return '+inf' end
  return now + ttl
end

if kind == 'returned' then
  rcall('HSET', job, 'status', 'finished', 'ended_at', ended_at)
  if result_ttl ~= 0 then
    rcall('ZADD', finished, score(result_ttl), job_id)
    rcall('XADD', results, 'MAXLEN', 10, '*', 'type', 1, 'worker_name', worker_name,
          'return_value', ARGV[7])
    keep(results, result_ttl)
  end
  if result_ttl == 0 then rcall('DEL', job) else keep(job, result_ttl) end
  return {code}
end

rcall('HSET', job, 'status', 'failed', 'ended_at', ended_at)
if verdict ~= '' then
  rcall('HSET', job, 'meta', with_verdict(rcall('HGET', job, 'meta')))
  rcall('XADD', results, 'MAXLEN', 10, '*', 'type', 2, 'worker_name', worker_name,
        'exc_string', exc, verdict_meta, verdict)
else
  rcall('XADD', results, 'MAXLEN', 10, '*', 'type', 2, 'worker_name', worker_name,
        'exc_string', exc)
end
keep(results, failure_ttl)
rcall('ZADD', failed, score(failure_ttl), job_id)
keep(job, failure_ttl)
-- The count last, and never a reason to fail: junk in it (a field that is no
-- number) must not make a job recorded whole look unrecorded.
redis.pcall('HINCRBY', jobs_failed, wid, 1)
return {code}
