-- Leaky bucket (tag 5): mirrors ratekeeper_core's algorithm/leaky_bucket.rs.
-- State: { level, anchor }.

-- The bucket at now, drained: its level and anchor. A level above two
-- buckets (an older quota's) is capped before draining (leaky_bucket.rs).
local function lb_view(q, s, now)
  if s == nil then return 0, now end
  local ticks = fdiv(sub(now, s[2]), q.interval)
  local l = sub(math.min(s[1], 2 * q.burst), ticks)
  if l > 0 then return l, s[2] + ticks * q.interval end
  return 0, now
end

STEP[5] = function(q, s, now, cost)
  local interval, capacity = q.interval, q.burst
  local level, anchor = lb_view(q, s, now)
  local probe = probe_of(cost)
  local allowed = level + probe <= capacity
  local consumed = allowed and cost > 0
  local next_level = level
  if consumed then next_level = level + cost end
  local ttl = sub(anchor + next_level * interval, now)
  local retry_at = anchor + sub(level + probe, capacity) * interval
  return allowed, sub(capacity, next_level), ttl, sub(retry_at, now), { next_level, anchor }, consumed, ttl
end

-- Through the instant the bucket is empty, as GCRA's TAT (leaky_bucket.rs).
ADJUST[5] = function(q, s, now, charge, units, taken_at)
  local interval = q.interval
  local level, anchor = lb_view(q, s, now)
  local tat = bucket_tat(q, math.max(anchor + level * interval, now), now, charge, units, taken_at)
  local l = cdiv(sub(tat, now), interval)
  if l == 0 then return { 0, now } end
  return { l, sub(tat, l * interval) }
end
