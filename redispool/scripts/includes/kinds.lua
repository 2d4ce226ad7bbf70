--[[
  The type check before a script's first write (used where a script says
  `-- @include kinds`; the pool helpers use it too). Redis keeps the writes of
  a script that fails halfway, so a script checks the type of every key it
  will write before it writes any: a key of a type redispool never writes
  stops it with 'CORRUPT <key> is a <type>, not a <type> ...', having changed
  nothing. Binds nothing: it reads no KEYS itself.
]]

-- An error reply naming `key` if it exists as a type other than `kind`, else nil.
local function wrong_kind(key, kind)
  local rcall = redis.call
  local found = rcall('TYPE', key)['ok']
  if found ~= 'none' and found ~= kind then
    return redis.error_reply('CORRUPT ' .. key .. ' is a ' .. found .. ', not a ' .. kind
      .. ' (written by hand?)')
  end
  return nil
end

-- The error reply of the first of `expected` ({key, kind} pairs) of the wrong kind, or nil.
local function mistyped(expected)
  for _, pair in ipairs(expected) do
    local bad = wrong_kind(pair[1], pair[2])
    if bad then return bad end
  end
  return nil
end
