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
local rcall = redis.call

local deadlines = KEYS[1]
local function corrupt(key, what)
  return redis.error_reply('CORRUPT ' .. key .. ' ' .. what .. ' (written by hand?)')
end
-- A read that fails on a wrong type, before any write.
local function probe(cmd, key, ...)
  local value = redis.pcall(cmd, key, ...)
  if type(value) == 'table' and value.err then
    if string.find(value.err, 'WRONGTYPE', 1, true) then
      error(corrupt(key, 'holds the wrong type'))
    end
    error(value)  -- not about the key (an ACL refusal): as Redis said it
  end
  return value
end
probe('ZCARD', deadlines)
local t = rcall('TIME')
local now = tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)

local result = {now}
for i = 2, #KEYS do
  local wid, token, ttl = ARGV[3 * i - 5], ARGV[3 * i - 4], tonumber(ARGV[3 * i - 3])
  local value = probe('GET', KEYS[i])
  local held = 0
  if value then
    local bar = string.find(value, '|', 1, true)
    local current = bar and string.sub(value, 1, bar - 1) or value
    if current == token then
      rcall('PEXPIRE', KEYS[i], ttl)
      rcall('ZADD', deadlines, now + ttl, wid)
      held = 1
    end
  end
  result[i] = held
end
return result
