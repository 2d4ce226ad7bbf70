--[[
  configure: create or change a pool's settings, which every host reads.

  KEYS[1..9]  the pool's common keys (see includes/pool.lua)
  ARGV[1]     ttl_ms     integer ms, or '' to keep
  ARGV[2]     strategy   'lifo' | 'fifo', or '' to keep
  ARGV[3]     default_ttl_ms   used when the pool has no ttl yet
  ARGV[4]     default_strategy used when the pool has no strategy yet

  Returns {OK, ttl_ms, strategy}
]]
-- @include pool

if ARGV[1] ~= '' then rcall('HSET', K.config, 'lease_ttl_ms', ARGV[1]) end
if ARGV[2] ~= '' then rcall('HSET', K.config, 'strategy', ARGV[2]) end
rcall('HSETNX', K.config, 'lease_ttl_ms', ARGV[3])
rcall('HSETNX', K.config, 'strategy', ARGV[4])
return {OK, pool_ttl_ms(), rcall('HGET', K.config, 'strategy')}
