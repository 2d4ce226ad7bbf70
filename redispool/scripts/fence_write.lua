--[[
  fence_write: a fenced store's write, the storage-side check of a fencing
  token (Kleppmann, "How to do distributed locking"). Not part of the pool's
  library: a downstream store runs it on its own Redis (redispool/fence.py).

  The write lands only if `token` is at least the highest token this fence
  has seen; `token` then becomes the highest seen. A writer whose lease has
  ended (a paused process back too late) carries an older token than the
  lease that replaced it, once that lease has written: it is refused and
  nothing changes.

  KEYS[1]     highest   string  highest token seen by this fence (decimal)
  KEYS[2]     data      string  the value stored under the written key
  ARGV[1]     token     decimal fencing token of the writer's lease
  ARGV[2]     value     string  what to store

  Returns
    {OK, token}              written; token is the highest seen now
    {STALE_TOKEN, highest}   refused: a newer token has written here
  An error reply 'CORRUPT <key> ...' (nothing written) if `highest` holds
  something that is not a token.
]]
local rcall = redis.call
-- Result codes: the table in redispool/errors.py is the source of truth.
-- OK, STALE_TOKEN: generated from redispool/errors.py Code (redispool/fence.py).

local highest_key, data = KEYS[1], KEYS[2]
local token, value = ARGV[1], ARGV[2]

-- Decimal strings without leading zeros compare exactly by length, then text
-- (Lua numbers are doubles: tokens can pass 2^53).
local function at_least(a, b)
  return #a > #b or (#a == #b and a >= b)
end

local highest = rcall('GET', highest_key)
if highest and not string.match(highest, '^[1-9]%d*$') then
  return redis.error_reply('CORRUPT ' .. highest_key .. ' holds ' .. string.format('%q', highest)
    .. ', not a token (written by hand?)')
end
if highest and not at_least(token, highest) then return {STALE_TOKEN, highest} end
rcall('SET', highest_key, token)
rcall('SET', data, value)
return {OK, token}
