--[[
  renew: extend many leases in one round trip.

  A lease is extended only if its key still exists (its deadline has not
  passed) and carries the caller's token; its deadline moves to now + ttl.

  KEYS[1]     deadlines  zset   leased worker id -> deadline (server ms)
  KEYS[2..n]  lease      string one lease key per lease renewed, in order
  ARGV[3i-2]  worker_id  of the lease in KEYS[i+1]
  ARGV[3i-1]  token      decimal fencing token
  ARGV[3i]    ttl_ms     integer ms

  Returns {now_ms, r1, r2, ...}: ri is 1 if lease i was renewed, 0 if it had
  ended; an error reply 'CORRUPT <key> ...' if deadlines or a lease key has a
  type redispool never writes (leases before it in the batch stay renewed).
]]
-- @include pool
-- (its helpers only: renew's KEYS are not the common ones, so K is not used)

local deadlines = KEYS[1]
probe('ZCARD', deadlines)
local now = server_time()

local result = {now}
for i = 2, #KEYS do
  local wid, token, ttl = ARGV[3 * i - 5], ARGV[3 * i - 4], tonumber(ARGV[3 * i - 3])
  local value = probe('GET', KEYS[i])
  local held = 0
  if value then
    if token_of(value) == token then
      rcall('PEXPIRE', KEYS[i], ttl)
      rcall('ZADD', deadlines, now + ttl, wid)
      held = 1
    end
  end
  result[i] = held
end
return result
