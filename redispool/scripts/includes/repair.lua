--[[
  Putting back workers lost from both idle and deadlines (an eviction, a
  hand DEL, a rollback): used where a script says `-- @include repair`, after
  `-- @include pool` and `-- @include handoff`, whose K and release() it uses (it binds nothing itself).
]]

-- True when some registered worker is neither idle nor leased: in a whole
-- pool every worker is in exactly one of idle and deadlines. O(1).
-- A key of the wrong type answers false: that is corrupted()'s to report.
local function workers_missing()
  local counts = {}
  for i, read in ipairs({{'HLEN', K.workers}, {'LLEN', K.idle}, {'ZCARD', K.deadlines}}) do
    counts[i] = redis.pcall(read[1], read[2])
    if type(counts[i]) ~= 'number' then return false end
  end
  return counts[1] > counts[2] + counts[3]
end

-- Put back `wid`, registered but neither idle nor leased (a key was lost: an
-- eviction, a hand DEL, a rollback). A lease key that still holds goes back
-- into deadlines; otherwise the worker is released (to a waiter, else idle).
local function put_back(wid, now, now_us)
  local pttl = rcall('PTTL', K.prefix .. 'lease:' .. wid)
  if pttl > 0 then
    rcall('ZADD', K.deadlines, now + pttl, wid)
  else
    release(wid, now, now_us, release_plan(wid))
  end
end

-- Put `wid` back if it is neither idle nor leased. True if it was missing.
local function restore(wid, now, now_us)
  if rcall('ZSCORE', K.deadlines, wid) or rcall('LPOS', K.idle, wid) then return false end
  put_back(wid, now, now_us)
  return true
end

-- Put back every registered worker that is neither idle nor leased; a walk of
-- the workers (O(pool)) only when the counts say one is missing. Returns how
-- many it put back.
local function repair(now, now_us)
  if not workers_missing() then return 0 end
  local known = {}
  for _, wid in ipairs(rcall('LRANGE', K.idle, 0, -1)) do known[wid] = true end
  for _, wid in ipairs(rcall('ZRANGE', K.deadlines, 0, -1)) do known[wid] = true end
  local count = 0
  for _, wid in ipairs(rcall('HKEYS', K.workers)) do
    if not known[wid] then
      put_back(wid, now, now_us)
      count = count + 1
    end
  end
  return count
end
