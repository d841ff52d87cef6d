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
ADJUST[7] = function(q, s, now, charge, units, taken_at)
  if charge or taken_at == nil then return ADJUST[2](q, s, now, charge, units, taken_at) end
  if taken_at + q.window <= now then return nil end
  local times, costs, m = log_entries(s, q.window, now)
  for i = 1, m do
    if times[i] == taken_at then
      costs[i] = sub(costs[i], units)
      return log_of(times, costs, m)
    end
  end
  return nil
end
