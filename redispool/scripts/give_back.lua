--[[
  give_back: a worker puts back, at the head of its queue, a job whose start
  (begin_job) got no reply: if that start never ran, or ran and said OK. Not
  if it refused the job, gave it back itself (another process holds the
  worker id, and may have started it: a second copy would run it twice), or
  if the job's client withdrew it from the intermediate queue meanwhile (it
  must never start then). A start that said OK is past any withdrawal (its
  client finds it in neither queue, as for a job that runs): given back, the
  job runs once, under its lease, as a started one would.

  One script, so no withdrawal falls between its look and its push: with the
  look and the push as two calls, a client that withdrew the job in between
  (both its lists empty then) was followed by the push, and the job it gave
  up on ran.

  KEYS[1]     intermediate  list   RQ's intermediate queue of the worker's queue
  KEYS[2]     wip           zset   RQ's StartedJobRegistry of the queue
  KEYS[3]     jobs          hash   worker id -> jobs started
  KEYS[4]     queue         list   RQ's queue of the worker
  ARGV[1]     job_id
  ARGV[2]     execution     the start's registry entry, '<job id>:<execution id>'
  ARGV[3]     worker_id

  Returns
    1    given back: the id was in the intermediate queue (the start never
         ran), or the start's own execution entry was in the registry (it
         said OK: the entry and the job's count are taken back)
    0    nothing to give back; nothing written
  A list or registry of the wrong type stops the script having written nothing.
]]
-- @include kinds
local rcall = redis.call

local taken, wip, jobs, queue = KEYS[1], KEYS[2], KEYS[3], KEYS[4]
local job_id, execution, wid = ARGV[1], ARGV[2], ARGV[3]

local bad = mistyped({{taken, 'list'}, {queue, 'list'}, {wip, 'zset'}, {jobs, 'hash'}})
if bad then return bad end
if rcall('LREM', taken, 1, job_id) == 0 then
  if rcall('ZREM', wip, execution) == 0 then return 0 end
  -- A junk count (not an integer) is left as it is: the job still goes back.
  redis.pcall('HINCRBY', jobs, wid, -1)
end
rcall('LPUSH', queue, job_id)
return 1
