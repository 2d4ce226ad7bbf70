--[[
  Workers changing hands (used where a script says `-- @include handoff`,
  after `-- @include pool`, whose K, probes and lease writing it uses; it
  binds nothing itself): a worker whose lease ends goes to the oldest live
  waiter, else back to the idle list (or leaves, if draining or unknown);
  the sweep of leases past their deadline; taking an idle worker that is
  really free; trimming dead waiters and serving live ones.
]]

-- Most waiter tickets one handoff looks at; the sweep trims the rest.
local HANDOFF_WALK = 32

-- True if wake key `wake` is missing or a list (a handoff can be pushed).
local function wakeable(wake)
  local kind = rcall('TYPE', wake)['ok']
  return kind == 'none' or kind == 'list'
end

-- The parts of a wait queue entry 'ticket|ttl_ms|nonce|holder', or nil.
local function parse_entry(entry)
  return string.match(entry, '^([^|]+)|(%d+)|(%x+)|(.*)$')
end

-- True if `ticket` is queued and alive at `now`.
local function live_ticket(ticket, now)
  local alive = ticket and rcall('ZSCORE', K.waiters, ticket)
  return alive and tonumber(alive) >= now
end

-- Hand `wid` to the oldest waiter still alive, looking at no more than
-- HANDOFF_WALK entries (dead ones are dropped). True if one took it.
local function hand_to_waiter(wid, now, now_us)
  for _ = 1, HANDOFF_WALK do
    local entry = rcall('LPOP', K.waitq)
    if not entry then return false end
    local ticket, ttl, nonce, holder = parse_entry(entry)
    if not ticket then
      rcall('ZREM', K.waiters, entry)  -- junk (or a bare ticket): a dead waiter
    else
      local alive = live_ticket(ticket, now)
      rcall('ZREM', K.waiters, ticket)
      local wake = K.prefix .. 'wake:' .. ticket
      -- a junk entry, or junk in its wake key, counts as a dead waiter
      if alive and valid_ttl(ttl) and wakeable(wake) then
        ttl = tonumber(ttl)
        local token, deadline = grant(wid, ttl, nonce, holder, now, now_us)
        rcall('RPUSH', wake, fmt(token) .. '|' .. fmt(deadline) .. '|' .. fmt(ttl) .. '|'
          .. nonce .. '|' .. wid)
        rcall('PEXPIRE', wake, ttl)
        return true
      end
    end
  end
  return false
end

-- What release(wid) will do, read before it writes anything, so that none of
-- its writes can fail on a junk key. A caller that read whether `wid` is
-- draining, known and waited for (checkin) passes what it read.
local function release_plan(wid, draining, known, waiting)
  if draining == nil then
    draining = probe('SISMEMBER', K.draining, wid) == 1
    known = probe('HEXISTS', K.workers, wid) == 1
    waiting = probe('LLEN', K.waitq) > 0
  end
  local plan = {draining = draining, known = known, waiting = waiting}
  probe('LLEN', K.idle)
  if plan.waiting then
    probe('ZCARD', K.waiters)
    check_token()
  end
  return plan
end

-- A worker whose lease ended (or that just joined) goes to the oldest live
-- waiter, else back to the idle list; a draining or unknown worker leaves.
-- `plan` is release_plan(wid), read before the caller's first write. `now`
-- may be nil: the clock is then read only if there is a waiter to serve.
-- True if a waiter took it (its new lease is then written).
local function release(wid, now, now_us, plan)
  if plan.draining then
    rcall('SREM', K.draining, wid)
    rcall('HDEL', K.workers, wid)
    return false
  end
  if not plan.known then return false end
  if plan.waiting then
    if not now then now, now_us = server_time() end
    if hand_to_waiter(wid, now, now_us) then return true end
  end
  rcall('LPUSH', K.idle, wid)
  return false
end

-- Return the workers of up to `limit` leases past their deadline.
local function sweep(now, now_us, limit)
  local due = rcall('ZRANGEBYSCORE', K.deadlines, '-inf', '(' .. fmt(now), 'LIMIT', 0, limit)
  local count = 0
  for _, wid in ipairs(due) do
    -- a lease key left without a TTL (written by hand) does not hold past its deadline
    if rcall('PTTL', K.prefix .. 'lease:' .. wid) < 0 then
      local plan = release_plan(wid)
      rcall('ZREM', K.deadlines, wid)
      release(wid, now, now_us, plan)
      count = count + 1
    end
  end
  return count
end

-- The checks a popped idle worker `wid` passes before it is leased: the
-- token counter can grow, and `wid` is registered and not leased already;
-- its deadline is then recorded. True if it was free. Raises (probe) on a
-- key of the wrong type, having written nothing.
local function vet_popped(wid, deadline)
  check_token()
  return probe('HEXISTS', K.workers, wid) == 1
    and probe('ZADD', K.deadlines, 'NX', fmt(deadline), wid) == 1
end

-- Pop idle workers until one is really free, and lease it. Stray ids (not
-- registered, or already leased: a corrupted list) are dropped. The caller
-- has probed workers, deadlines and the token first.
local function take_idle(ttl, nonce, holder, now, now_us)
  while true do
    local wid = pop_idle()
    if not wid then return nil end
    if rcall('HEXISTS', K.workers, wid) == 1 and not rcall('ZSCORE', K.deadlines, wid) then
      local token, deadline = grant(wid, ttl, nonce, holder, now, now_us)
      return {OK, wid, token, deadline, ttl}
    end
  end
end

-- Drop the queue entries of dead waiters: up to `limit` tickets whose
-- alive_until has passed leave waiters, then up to `limit` dead entries leave
-- the head of the queue (those behind a live waiter go when it is served).
-- Returns how many tickets and entries it dropped.
local function trim_waiters(now, limit)
  local dead = rcall('ZRANGEBYSCORE', K.waiters, '-inf', '(' .. fmt(now), 'LIMIT', 0, limit)
  if #dead > 0 then rcall('ZREM', K.waiters, unpack(dead)) end
  local dropped = #dead
  for _ = 1, limit do
    local entry = rcall('LINDEX', K.waitq, 0)
    if not entry then break end
    local ticket = parse_entry(entry)
    if live_ticket(ticket, now) then break end
    rcall('LPOP', K.waitq)
    dropped = dropped + 1
  end
  return dropped
end

-- Hand idle workers to live waiters at the head of the queue (a handoff that
-- found only dead entries within its walk left its worker idle). At most
-- `limit` workers.
local function serve_waiters(now, now_us, limit)
  for _ = 1, limit do
    local head = rcall('LINDEX', K.waitq, 0)
    if rcall('LLEN', K.idle) == 0 or not (head and live_ticket(parse_entry(head), now)) then
      return
    end
    local wid = pop_idle()
    if rcall('HEXISTS', K.workers, wid) == 1 and not rcall('ZSCORE', K.deadlines, wid) then
      if not hand_to_waiter(wid, now, now_us) then
        unpop_idle(wid)
        return
      end
    end
  end
end
