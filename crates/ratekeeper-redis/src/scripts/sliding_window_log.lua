-- Sliding window log (tag 2): mirrors ratekeeper_core's algorithm/sliding_log.rs.
-- State: a view of the pairs (timestamp, running total), sorted by timestamp
-- (see decode and log_pair in the prelude). The units in the window and the
-- wait of a denial are found by binary searches, so a denial reads O(log n)
-- pairs of a log of n (each a GETRANGE of 16 bytes when the log was not read
-- whole); an admission reads the live pairs once and writes them back.
HAS_LOG = true
-- Whether pair i of `view` is live at `now` (log_search's predicate).
local function log_is_live(view, i, window, now)
  local ts = log_pair(view, i)
  return ts + window > now
end

-- Whether pair i of `view` has a running total of at least `need`.
local function log_reaches(view, i, need)
  local _, t = log_pair(view, i)
  return t >= need
end

-- The view of log `s` (an empty one for nil), its first live pair (an
-- entry counts while now < timestamp + window: sliding_log.rs's live), and
-- the running total before that pair.
local function log_live(s, window, now)
  local view = s
  if view == nil then view = { n = 0, raw = '', at = 1, shift = 0 } end
  local first = log_search(view, 1, view.n + 1, log_is_live, window, now)
  local prior = 0
  if first > 1 then
    local _, t = log_pair(view, first - 1)
    prior = t
  end
  return view, first, prior
end

STEP[2] = function(q, s, now, cost)
  local window, limit = q.window, q.limit
  local view, first, prior = log_live(s, window, now)
  local n = view.n
  -- Units up to the last pair.
  local last_ts, last_total = nil, prior
  if n >= first then last_ts, last_total = log_pair(view, n) end
  local used = sub(last_total, prior)
  local probe = probe_of(cost)
  local allowed = used + probe <= limit
  local consumed = allowed and cost > 0

  local retry_after = 0
  if not allowed and n >= first then
    -- The first live pair whose leaving frees enough: its running total
    -- reaches last_total + probe - limit. On a full log of single units
    -- that is the first live pair itself, looked at first.
    local need = last_total + probe - limit
    local k = first
    if not log_reaches(view, first, need) then k = log_search(view, first + 1, n + 1, log_reaches, need) end
    if k <= n then
      local ts = log_pair(view, k)
      retry_after = sub(ts + window, now)
    end
  end

  -- The next state: the live pairs (a view, read again only if written),
  -- with this request's units.
  local live = n - first + 1
  local from = view.at + 16 * (first - 1)
  local state = { n = live, raw = view.raw, key = view.key, at = from, shift = view.shift + prior }
  local final_ts = last_ts
  if consumed then
    -- The live pairs, read once, and this request's units.
    local bytes = log_bytes(view, from, 16 * live)
    state.key = nil
    state.at = 1
    -- The new running total, as the view's bytes hold totals.
    local total = last_total + cost + view.shift
    if last_ts == nil or last_ts < now then
      state.raw = bytes .. struct.pack('<I8I8', now, total)
      state.n = live + 1
      final_ts = now
    elseif last_ts == now then
      state.raw = string.sub(bytes, 1, 16 * (live - 1)) .. struct.pack('<I8I8', now, total)
    else
      -- The clock stepped back: insert (or merge) in order, the running
      -- totals from there on up by the cost; written relative to the first
      -- live pair.
      local flat = { n = live, raw = bytes, at = 1, shift = view.shift + prior }
      local parts, m, add = {}, 0, 0
      local before = 0
      for i = 1, live do
        local ts, t = log_pair(flat, i)
        if add == 0 and ts >= now then
          add = cost
          if ts > now then
            m = m + 1
            parts[m] = struct.pack('<I8I8', now, before + cost)
          end
        end
        before = t
        m = m + 1
        parts[m] = struct.pack('<I8I8', ts, t + add)
      end
      state.raw = table.concat(parts)
      state.n = m
      state.shift = 0
    end
  end
  local used_after = used
  if consumed then used_after = used + cost end
  local ttl = 0
  if final_ts ~= nil then ttl = sub(final_ts + window, now) end
  return allowed, sub(limit, used_after), ttl, retry_after, state, consumed, ttl
end

-- The live pairs of log `s`, read at once, as (timestamp, cost): their
-- times, their costs, how many, and the units they hold.
local function log_entries(s, window, now)
  local view, first, prior = log_live(s, window, now)
  local times, costs, m, used = {}, {}, 0, 0
  local live = view.n - first + 1
  local flat = { n = live, raw = log_bytes(view, view.at + 16 * (first - 1), 16 * live), at = 1, shift = view.shift }
  for i = 1, live do
    local ts, total = log_pair(flat, i)
    m = m + 1
    times[m], costs[m] = ts, total - prior
    used = used + costs[m]
    prior = total
  end
  return times, costs, m, used
end

-- A log of the entries that still hold units, written as running totals.
local function log_of(times, costs, m)
  local parts, k, total = {}, 0, 0
  for i = 1, m do
    if costs[i] > 0 then
      total = total + costs[i]
      k = k + 1
      parts[k] = struct.pack('<I8I8', times[i], total)
    end
  end
  return { n = k, raw = table.concat(parts), at = 1, shift = 0 }
end

-- A charge or refund (algorithm/sliding_log.rs): the live pairs are read
-- whole, changed, and written back.
ADJUST[2] = function(q, s, now, charge, units, taken_at)
  local window, limit = q.window, q.limit
  local times, costs, m, used = log_entries(s, window, now)
  if charge then
    -- Up to twice the limit in the window.
    local add = math.min(units, sub(2 * limit, used))
    if add > 0 then
      -- In order, one pair per instant, even if the clock stepped back.
      local at = m + 1
      for i = 1, m do
        if times[i] >= now then at = i break end
      end
      if at <= m and times[at] == now then
        costs[at] = costs[at] + add
      else
        table.insert(times, at, now)
        table.insert(costs, at, add)
        m = m + 1
      end
    end
  else
    local left = units
    local function take(i)
      local t = math.min(costs[i], left)
      costs[i] = costs[i] - t
      left = left - t
    end
    if taken_at ~= nil then
      -- The units of that instant, then the oldest after it; none once
      -- that instant has left the window.
      if taken_at + window <= now then return nil end
      for i = 1, m do
        if left == 0 then break end
        if times[i] >= taken_at then take(i) end
      end
    else
      for i = m, 1, -1 do
        if left == 0 then break end
        take(i)
      end
    end
  end
  return log_of(times, costs, m)
end
