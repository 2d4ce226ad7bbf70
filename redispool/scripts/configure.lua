--[[
  configure: create or change a pool's settings, which every host reads.

  KEYS[1..9]  the pool's common keys (see includes/pool.lua)
  ARGV[1]     ttl_ms     integer ms, or '' to keep
  ARGV[2]     strategy   'lifo' | 'fifo', or '' to keep
  ARGV[3]     default_ttl_ms   used when the pool has no ttl yet
  ARGV[4]     default_strategy used when the pool has no strategy yet

  Returns {OK, ttl_ms, strategy}, or the error reply 'CORRUPT <key> ...'
  (nothing changed) when a key holds what redispool never writes; a junk
  lease_ttl_ms or strategy is no error when this call replaces it.
]]
-- @include pool

local new_ttl = ARGV[1] ~= '' and ARGV[1] or nil
local new_strategy = ARGV[2] ~= '' and ARGV[2] or nil
local refused = corrupted(new_ttl, new_strategy)  -- new values replace junk ones
if refused then return refused end
if new_ttl then rcall('HSET', K.config, 'lease_ttl_ms', new_ttl) end
if new_strategy then rcall('HSET', K.config, 'strategy', new_strategy) end
rcall('HSETNX', K.config, 'lease_ttl_ms', ARGV[3])
rcall('HSETNX', K.config, 'strategy', ARGV[4])
local ttl, strategy = settings()
return {OK, ttl, strategy}
