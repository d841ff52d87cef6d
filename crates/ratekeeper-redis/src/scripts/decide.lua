-- ratekeeper: the decision step, mirroring ratekeeper_core's engine.rs.
--
-- decide(KEYS, ARGV, has_log) is the engine; a script ends with
-- `return decide(KEYS, ARGV, HAS_LOG)`, and the function library registers
-- one function per script calling it (scripts.rs). Every helper is defined
-- at the top level, so a library makes them once, when it is loaded, and a
-- call makes none.
--
-- KEYS[i]: the state key of rule i.
-- ARGV[1]: the time in µs since the epoch, or '' to read the server's TIME.
-- ARGV[2]: '1' to return one decision per rule, '0' for the combined one,
--   '2' to adjust (engine.rs's adjust: charges and refunds).
-- ARGV[3]: milliseconds added to every TTL written (clock-skew allowance).
-- ARGV[4 + 7(i-1) ...]: rule i's algorithm tag, limit, window (µs, or
--   for a fixed window on a calendar six window boundaries in µs,
--   comma-separated, calendar.rs's `boundaries`),
--   burst, emission interval (µs), penalty (µs, 0 for none) and the
--   request's cost on it (0 is a peek). To adjust, 9 per rule: the same
--   six, then 'c' (charge) or 'r' (refund), the units, and the time the
--   refunded units were taken (µs, or '' when not known).
--
-- Returns { allowed (1/0), index of the deciding rule (0-based), remaining,
-- reset_after µs, retry_after µs }, or, one per rule, { admitted (1/0),
-- then allowed, remaining, reset_after µs, retry_after µs of each rule,
-- then the time decided at (µs) }; to adjust, the same without the time;
-- or { -1, index, reason } when the state at that index is not rate-limit
-- state. Every rule is decided; if any denies, none consumes (a denying
-- rule's penalty is still written), and the reported decision is the most
-- restrictive. A rule with a cost of 0 is only looked at and never holds
-- the others back. Per rule, a rule that would have allowed a denied
-- request reports what a peek would.

-- Writes a state with its TTL in µs: whole milliseconds, rounded up, so a
-- key never expires early, and `pad` milliseconds more (ARGV[3]).
local function store(key, state, ttl, pad)
  local ms = math.ceil(math.max(ttl, 1) / 1000) + pad
  redis.call('SET', key, encode(state), 'PX', ms)
end

local function flag(b)
  if b then return 1 end
  return 0
end

-- What a request of one unit gets at `now` from state s (nil for none),
-- given the step's answer without a cost on s's algorithm (allowed,
-- remaining, reset_after, retry_after): a penalty in force denies.
local function looked(s, now, allowed, remaining, reset, retry)
  if s ~= nil and now < s.blocked then
    local wait = s.blocked - now
    return false, 0, math.max(reset, wait), wait
  end
  if allowed then retry = 0 end
  return allowed, remaining, reset, retry
end

-- What a request of one unit would get at `now` from state s (nil for
-- none) of a rule, as engine.rs's evaluate with a cost of 0: allowed,
-- remaining, reset_after, retry_after.
local function look(tag, q, s, now)
  local same = nil
  if s ~= nil and s.tag == tag then same = s end
  return looked(s, now, STEP[tag](q, same, now, 0))
end

-- The quota of the rule whose arguments follow ARGV[b].
local function quota(ARGV, b)
  local q = {
    limit = tonumber(ARGV[b + 2]),
    window = tonumber(ARGV[b + 3]),
    burst = tonumber(ARGV[b + 4]),
    interval = tonumber(ARGV[b + 5]),
  }
  if q.window == nil then
    -- A calendar: the boundaries of six consecutive windows.
    local bounds = {}
    for v in string.gmatch(ARGV[b + 3], '%d+') do bounds[#bounds + 1] = tonumber(v) end
    q.bounds = bounds
  end
  return q
end

-- Rule i's change (arguments from ARGV[b], state s, of its algorithm
-- `same`): records what to write in writes[i] and appends what the rule
-- now says to `out`. Run under pcall: a sliding log read lazily reports a
-- corrupt pair it meets through error().
local function adjust_one(ARGV, b, i, tag, q, s, same, now, units, taken_at, out, writes)
  local next_state = nil
  if units > 0 then next_state = ADJUST[tag](q, same, now, ARGV[b + 7] == 'c', units, taken_at) end
  local allowed, remaining, reset, retry
  if next_state ~= nil then
    next_state.tag = tag
    -- A penalty in force stays; one that has ended is forgotten.
    next_state.blocked = 0
    if s ~= nil and s.blocked > now then next_state.blocked = s.blocked end
    -- One step without a cost gives both the TTL and what the rule now says.
    local a, r, reset_after, retry_after, _, _, ttl = STEP[tag](q, next_state, now, 0)
    ttl = math.max(ttl, sub(next_state.blocked, now))
    -- A state equivalent to none replaces only one of this algorithm,
    -- and then goes (engine.rs); where there was none, nothing is written.
    if ttl > 0 then
      writes[i] = { next_state, ttl }
    elseif same ~= nil then
      writes[i] = false
    end
    allowed, remaining, reset, retry = looked(next_state, now, a, r, reset_after, retry_after)
  else
    allowed, remaining, reset, retry = look(tag, q, s, now)
  end
  local k = #out
  out[k + 1] = flag(allowed)
  out[k + 2] = remaining
  out[k + 3] = reset
  out[k + 4] = retry
end

-- ARGV[2] == '2': every rule's change is worked out before any is
-- written, so a corrupt state leaves every key as it was.
local function adjust(KEYS, ARGV, states, now, pad)
  local n = #KEYS
  local out, writes = { 1 }, {}
  for i = 1, n do
    local b = 3 + (i - 1) * 9
    local tag = tonumber(ARGV[b + 1])
    local q = quota(ARGV, b)
    local units = tonumber(ARGV[b + 8])
    local taken_at = nil
    if ARGV[b + 9] ~= '' then taken_at = tonumber(ARGV[b + 9]) end
    local s = states[i]
    local same = nil
    if s ~= nil and s.tag == tag then same = s end
    local ok, err = pcall(adjust_one, ARGV, b, i, tag, q, s, same, now, units, taken_at, out, writes)
    if not ok then
      if type(err) == 'table' and err.corrupt then return { -1, i - 1, err.corrupt } end
      error(err)
    end
  end
  for i = 1, n do
    local w = writes[i]
    if w == false then
      redis.call('DEL', KEYS[i])
    elseif w ~= nil then
      store(KEYS[i], w[1], w[2], pad)
    end
  end
  return out
end

-- Rule i's verdict at `now` (its arguments in ARGV, its state states[i]):
-- allowed, remaining, reset_after, retry_after, what to write (the state
-- and its TTL, or nil), then the step's arguments for a look at the rule
-- without a cost (tag, quota, state of its algorithm) and the request's
-- cost on it; or nil and the reason its state is not rate-limit state.
local function judge(ARGV, states, now, i)
  local b = 3 + (i - 1) * 7
  local tag = tonumber(ARGV[b + 1])
  local q = quota(ARGV, b)
  local penalty = tonumber(ARGV[b + 6])
  local cost = tonumber(ARGV[b + 7])
  local s = states[i]
  local blocked_until = 0
  if s ~= nil then blocked_until = s.blocked end
  local blocked = now < blocked_until
  -- State of another algorithm (the rule was changed) counts as no state.
  local same = nil
  if s ~= nil and s.tag == tag then same = s end
  -- A blocked key consumes nothing: look at its state as a peek would.
  local step_cost = cost
  if blocked then step_cost = 0 end
  -- A sliding log is read lazily: a corrupt pair it meets is reported here.
  local ok, allowed, remaining, reset, retry, state, consumed, ttl, rewrite = pcall(STEP[tag], q, same, now, step_cost)
  if not ok then
    if type(allowed) == 'table' and allowed.corrupt then return nil, allowed.corrupt end
    error(allowed)
  end
  if blocked then
    local wait = blocked_until - now
    return false, 0, math.max(reset, wait), wait, nil, nil, tag, q, same, cost
  end
  if allowed then
    if not consumed then return true, remaining, reset, 0, nil, nil, tag, q, same, cost end
    state.tag = tag
    state.blocked = 0
    return true, remaining, reset, 0, state, ttl, tag, q, same, cost
  end
  if penalty > 0 and cost > 0 then
    state.tag = tag
    state.blocked = now + penalty
    return false, 0, math.max(reset, penalty), math.max(retry, penalty), state, math.max(ttl, penalty), tag, q, same, cost
  end
  -- An older quota's debt, capped: written, so the wait stays true.
  if rewrite and cost > 0 then
    state.tag = tag
    state.blocked = 0
    return false, remaining, reset, retry, state, ttl, tag, q, same, cost
  end
  return false, remaining, reset, retry, nil, nil, tag, q, same, cost
end

-- Decision::is_more_restrictive_than, for the pairs that compete.
local function more_restrictive(a, b)
  if a[1] ~= b[1] then return not a[1] end
  if a[1] then return a[2] < b[2] end
  return a[4] > b[4]
end

-- The engine: decides KEYS with ARGV (above), reading state with one GET
-- unless `has_log` (the rules may include a sliding log or places in
-- flight, whose states can be longer than a first read takes).
local function decide(KEYS, ARGV, has_log)
  local now
  if ARGV[1] == '' then
    local t = redis.call('TIME')
    now = tonumber(t[1]) * 1000000 + tonumber(t[2])
  else
    now = tonumber(ARGV[1])
  end
  local each = ARGV[2] == '1'
  local pad = tonumber(ARGV[3])
  local n = #KEYS

  -- Read and check every state before deciding anything.
  local states = {}
  for i = 1, n do
    local raw, partial = read_state(KEYS[i], has_log)
    if type(raw) == 'table' and raw.err then
      return { -1, i - 1, raw.err }
    end
    if raw then
      local s, why = decode(raw, partial, KEYS[i])
      if s == nil then return { -1, i - 1, why } end
      states[i] = s
    end
  end

  if ARGV[2] == '2' then return adjust(KEYS, ARGV, states, now, pad) end

  if n == 1 then
    -- One rule (a plain check, a reservation, a place taken), without the
    -- tables of the general step below. The request is admitted when the
    -- rule allows or is only looked at, so its write (an admission, a
    -- penalty, a capped debt) is made either way, and the rule's own answer
    -- is every answer.
    local allowed, remaining, reset, retry, state, ttl, _, _, _, cost = judge(ARGV, states, now, 1)
    if allowed == nil then return { -1, 0, remaining } end
    if state ~= nil then store(KEYS[1], state, ttl, pad) end
    if each then
      return { flag(allowed or cost == 0), flag(allowed), remaining, reset, retry, now }
    end
    return { flag(allowed), 0, remaining, reset, retry }
  end

  -- One verdict per rule: { allowed, remaining, reset_after, retry_after, write,
  -- peek } where write is { state, ttl } or nil, and peek the step's
  -- arguments for a look at the rule without a cost.
  local verdicts = {}
  local admitted = true
  for i = 1, n do
    local allowed, remaining, reset, retry, state, ttl, tag, q, same, cost = judge(ARGV, states, now, i)
    if allowed == nil then return { -1, i - 1, remaining } end
    local w = nil
    if state ~= nil then w = { state, ttl } end
    -- A rule only peeked at (cost 0) never holds the request back.
    if not allowed and cost > 0 then admitted = false end
    verdicts[i] = { allowed, remaining, reset, retry, w, { tag, q, same } }
  end

  local best = nil
  for i = 1, n do
    local v = verdicts[i]
    -- When the request is denied, only denials compete for "most restrictive".
    if (admitted or not v[1]) and (best == nil or more_restrictive(v, verdicts[best])) then
      best = i
    end
    local w = v[5]
    if w ~= nil and v[1] == admitted then store(KEYS[i], w[1], w[2], pad) end
  end

  if each then
    local out = { flag(admitted) }
    for i = 1, n do
      local v = verdicts[i]
      if v[1] and not admitted then
        local p = v[6]
        local _, remaining, reset = STEP[p[1]](p[2], p[3], now, 0)
        v = { true, remaining, reset, 0 }
      end
      local k = #out
      out[k + 1] = flag(v[1])
      out[k + 2] = v[2]
      out[k + 3] = v[3]
      out[k + 4] = v[4]
    end
    -- The time decided at, for a reservation's refunds.
    out[#out + 1] = now
    return out
  end

  local d = verdicts[best]
  return { flag(d[1]), best - 1, d[2], d[3], d[4] }
end
