-- Sliding window log (tag 2): mirrors ratelimit_core's algorithm/sliding_log.rs.
-- State: a view of the pairs (timestamp, running total), sorted by timestamp
-- (see decode and log_pair in the prelude). The units in the window and the
-- wait of a denial are found by binary searches, so a denial reads O(log n)
-- pairs of a log of n; an admission writes the live pairs back.
STEP[2] = function(q, s, now, cost)
  local window, limit = q.window, q.limit
  local view = s
  if view == nil then view = { n = 0, raw = '', at = 1, shift = 0 } end
  local n = view.n
  -- The first live pair: an entry counts while now < timestamp + window.
  local lo, hi = 1, n + 1
  while lo < hi do
    local mid = math.floor((lo + hi) / 2)
    local ts = log_pair(view, mid)
    if ts + window <= now then lo = mid + 1 else hi = mid end
  end
  local first = lo
  -- Units before the first live pair, and up to the last one.
  local prior, last_ts, last_total = 0, nil, 0
  if first > 1 then
    local _, t = log_pair(view, first - 1)
    prior = t
  end
  last_total = prior
  if n >= first then last_ts, last_total = log_pair(view, n) end
  local used = sub(last_total, prior)
  local probe = probe_of(cost)
  local allowed = used + probe <= limit
  local consumed = allowed and cost > 0

  local retry_after = 0
  if not allowed and n >= first then
    -- The first live pair whose leaving frees enough: its running total
    -- reaches last_total + probe - limit.
    local need = last_total + probe - limit
    lo, hi = first, n + 1
    while lo < hi do
      local mid = math.floor((lo + hi) / 2)
      local _, t = log_pair(view, mid)
      if t >= need then hi = mid else lo = mid + 1 end
    end
    if lo <= n then
      local ts = log_pair(view, lo)
      retry_after = sub(ts + window, now)
    end
  end

  -- The next state: the live pairs (a view, read again only if written),
  -- with this request's units.
  local live = n - first + 1
  local from = view.at + 16 * (first - 1)
  local state = { n = live, raw = view.raw, at = from, shift = view.shift + prior }
  local final_ts = last_ts
  if consumed then
    -- The new running total, as the view's bytes hold totals.
    local total = last_total + cost + view.shift
    if last_ts == nil or last_ts < now then
      state.raw = string.sub(view.raw, from, from + 16 * live - 1) .. struct.pack('<I8I8', now, total)
      state.n = live + 1
      final_ts = now
    elseif last_ts == now then
      state.raw = string.sub(view.raw, from, from + 16 * (live - 1) - 1) .. struct.pack('<I8I8', now, total)
    else
      -- The clock stepped back: insert (or merge) in order, the running
      -- totals from there on up by the cost; written relative to the first
      -- live pair.
      local parts, m, add = {}, 0, 0
      local before = 0
      for i = first, n do
        local ts, t = log_pair(view, i)
        t = t - prior
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
    state.at = 1
  end
  local used_after = used
  if consumed then used_after = used + cost end
  local ttl = 0
  if final_ts ~= nil then ttl = sub(final_ts + window, now) end
  return allowed, sub(limit, used_after), ttl, retry_after, state, consumed, ttl
end
