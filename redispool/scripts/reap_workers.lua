--[[
  reap_workers: bury the workers whose process stopped beating, and tell the
  caller how one lease stands.

  A buried worker leaves the pool; its lease (if any) ends and its token is
  remembered as ended by a dead worker. Safe from any number of hosts.

  KEYS[1..16] the pool's common keys and the workers keys (see
              includes/pool.lua and includes/workers.lua)
  ARGV[1]     limit       most workers to bury in this call
  ARGV[2]     worker_id   of the lease to report on, or ''
  ARGV[3]     token       decimal token of that lease, or ''
  ARGV[4]     nonce       hex nonce of that lease, or ''

  Returns {OK, buried, state}: state is OK while the lease holds, WORKER_DEAD
  if it ended because its worker died, NOT_HELD if it ended otherwise, and
  -1 when no lease was asked about.
]]
-- @include pool
-- @include workers

local limit, wid, token, nonce = tonumber(ARGV[1]), ARGV[2], ARGV[3], ARGV[4]

local refused = corrupted()
if refused then return refused end

local now = server_time()
local buried = reap(now, limit)
local state = -1
if wid ~= '' then
  local value = rcall('GET', K.prefix .. 'lease:' .. wid)
  if value and holds(value, token, nonce) then
    state = OK
  elseif rcall('ZSCORE', W.dead, token) then
    state = WORKER_DEAD
  else
    state = NOT_HELD
  end
end
return {OK, buried, state}
