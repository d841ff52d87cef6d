-- Fixed window (tag 1): mirrors ratekeeper_core's algorithm/fixed_window.rs.
-- State: { window_start, count }.
STEP[1] = function(q, s, now, cost)
  local window, limit = q.window, q.limit
  local aligned = now - math.fmod(now, window)
  local start, count = aligned, 0
  if s ~= nil and s[1] >= aligned then
    start, count = s[1], s[2]
  end
  local until_end = sub(start + window, now)
  local allowed = count + probe_of(cost) <= limit
  local consumed = allowed and cost > 0
  local next_count = count
  if consumed then next_count = count + cost end
  local ttl = until_end
  if next_count == 0 then ttl = 0 end
  return allowed, sub(limit, next_count), ttl, until_end, { start, next_count }, consumed, ttl
end
