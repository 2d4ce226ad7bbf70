--[[
  renew: extend many leases in one round trip.

  A lease is extended only if its key still exists (its deadline has not
  passed) and carries the caller's token and nonce; its deadline moves to
  now + ttl.

  KEYS[1]     deadlines  zset   leased worker id -> deadline (server ms)
  KEYS[2..n]  lease      string one lease key per lease renewed, in order
  ARGV[4i-3]  worker_id  of the lease in KEYS[i+1]
  ARGV[4i-2]  token      decimal fencing token
  ARGV[4i-1]  nonce      hex nonce of the lease
  ARGV[4i]    ttl_ms     integer ms

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
  local wid, token, nonce = ARGV[4 * i - 7], ARGV[4 * i - 6], ARGV[4 * i - 5]
  local ttl = tonumber(ARGV[4 * i - 4])
  local value = probe('GET', KEYS[i])
  local held = 0
  if value then
    if holds(value, token, nonce) then
      rcall('PEXPIRE', KEYS[i], ttl)
      rcall('ZADD', deadlines, now + ttl, wid)
      held = 1
    end
  end
  result[i] = held
end
return result
