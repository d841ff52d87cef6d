-- Concurrency (tag 7): mirrors ratekeeper_core's algorithm/concurrency.rs.
-- Leases are a sliding log's pairs (the instant each was taken, its
-- units); it needs sliding_window_log.lua before it.
STEP[7] = function(q, s, now, cost)
  local allowed, remaining, reset, retry, state, consumed, ttl = STEP[2](q, s, now, cost)
  -- The wait a denial reports is a hint: at most a second.
  return allowed, remaining, reset, math.min(retry, 1000000), state, consumed, ttl
end

-- A release (a refund with the instant its lease was taken) frees units of
-- that lease and of no other; anything else is the sliding log's change.
-- The live pairs are read at once and written back without the lease's
-- units (sliding_window_log.lua's log_entries and log_of in one pass).
ADJUST[7] = function(q, s, now, charge, units, taken_at)
  if charge or taken_at == nil then return ADJUST[2](q, s, now, charge, units, taken_at) end
  if taken_at + q.window <= now then return nil end
  local view, first, before = log_live(s, q.window, now)
  local live = view.n - first + 1
  local flat = { n = live, raw = log_bytes(view, view.at + 16 * (first - 1), 16 * live), at = 1, shift = view.shift }
  local parts, k, total, found = {}, 0, 0, false
  for i = 1, live do
    local ts, t = log_pair(flat, i)
    local cost = t - before
    before = t
    if not found and ts == taken_at then
      found = true
      cost = sub(cost, units)
    end
    if cost > 0 then
      total = total + cost
      k = k + 1
      parts[k] = struct.pack('<I8I8', ts, total)
    end
  end
  if not found then return nil end
  return { n = k, raw = table.concat(parts), at = 1, shift = 0 }
end
