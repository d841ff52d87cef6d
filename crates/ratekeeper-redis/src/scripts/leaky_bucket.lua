-- Leaky bucket (tag 5): mirrors ratekeeper_core's algorithm/leaky_bucket.rs.
-- State: { level, anchor }.
STEP[5] = function(q, s, now, cost)
  local interval, capacity = q.interval, q.burst
  local level, anchor = 0, now
  if s ~= nil then
    local ticks = fdiv(sub(now, s[2]), interval)
    local l = sub(s[1], ticks)
    -- Above capacity only after a quota change: capped (leaky_bucket.rs).
    if l > capacity then l = capacity end
    if l > 0 then
      level, anchor = l, s[2] + ticks * interval
    end
  end
  local probe = probe_of(cost)
  local allowed = level + probe <= capacity
  local consumed = allowed and cost > 0
  local next_level = level
  if consumed then next_level = level + cost end
  local ttl = sub(anchor + next_level * interval, now)
  local retry_at = anchor + sub(level + probe, capacity) * interval
  return allowed, sub(capacity, next_level), ttl, sub(retry_at, now), { next_level, anchor }, consumed, ttl
end
