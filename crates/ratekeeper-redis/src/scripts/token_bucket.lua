-- Token bucket (tag 4): mirrors ratekeeper_core's algorithm/token_bucket.rs.
-- State: { tokens, anchor }.
STEP[4] = function(q, s, now, cost)
  local interval, burst = q.interval, q.burst
  local tokens, anchor = burst, now
  if s ~= nil then
    local ticks = fdiv(sub(now, s[2]), interval)
    local t = s[1] + ticks
    if t < burst then
      tokens, anchor = t, s[2] + ticks * interval
    end
  end
  local probe = probe_of(cost)
  local allowed = tokens >= probe
  local consumed = allowed and cost > 0
  local next_tokens = tokens
  if consumed then next_tokens = tokens - cost end
  local ttl = sub(anchor + sub(burst, next_tokens) * interval, now)
  local retry_at = anchor + sub(probe, tokens) * interval
  return allowed, next_tokens, ttl, sub(retry_at, now), { next_tokens, anchor }, consumed, ttl
end
