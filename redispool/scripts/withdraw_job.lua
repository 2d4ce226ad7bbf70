--[[
  withdraw_job: a client that gave up on a job (an interrupt, a timeout, a
  cancelled await) takes it off its worker's queue and out of the
  intermediate queue the worker's wait moves it to, in one step: begin_job
  starts only a job still in the intermediate queue, so a withdrawn job that
  had not started never starts. One script, so that neither the worker's
  move (queue to intermediate) nor its give-back (intermediate or registry
  to queue) can fall between the two removals and leave the id behind.

  KEYS[1]     queue         list   RQ's queue of the worker
  KEYS[2]     intermediate  list   RQ's intermediate queue of that queue
  ARGV[1]     job_id

  Returns
    the number of copies taken out (0: it had started, or was never queued)
  A list of the wrong type stops the script having written nothing.
]]
-- @include kinds
local rcall = redis.call

local queue, taken, job_id = KEYS[1], KEYS[2], ARGV[1]

local bad = mistyped({{queue, 'list'}, {taken, 'list'}})
if bad then return bad end
return rcall('LREM', queue, 1, job_id) + rcall('LREM', taken, 1, job_id)
