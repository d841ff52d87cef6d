-- Token bucket (tag 4): mirrors ratekeeper_core's algorithm/token_bucket.rs.
-- State: { tokens, anchor }; an anchor after now is a debt.

-- The bucket at now, refilled: its tokens and anchor, and whether a debt
-- past one bucket (an older quota's) was capped (token_bucket.rs).
local function tb_view(q, s, now)
  local interval, burst = q.interval, q.burst
  if s ~= nil then
    local most = now + burst * interval
    -- A debt has no tokens; tokens with a later anchor are a clock that
    -- stepped back, read as usual.
    if s[1] == 0 and s[2] > most then return 0, most, true end
    local ticks = fdiv(sub(now, s[2]), interval)
    local t = s[1] + ticks
    if t < burst then return t, s[2] + ticks * interval, false end
  end
  return burst, now, false
end

STEP[4] = function(q, s, now, cost)
  local interval, burst = q.interval, q.burst
  local tokens, anchor, capped = tb_view(q, s, now)
  local probe = probe_of(cost)
  local allowed = tokens >= probe
  local consumed = allowed and cost > 0
  local next_tokens = tokens
  if consumed then next_tokens = tokens - cost end
  local ttl = sub(anchor + sub(burst, next_tokens) * interval, now)
  local retry_at = anchor + sub(probe, tokens) * interval
  return allowed, next_tokens, ttl, sub(retry_at, now), { next_tokens, anchor }, consumed, ttl, capped
end

-- Through the instant the bucket is full, as GCRA's TAT (token_bucket.rs).
ADJUST[4] = function(q, s, now, charge, units, taken_at)
  local interval, burst = q.interval, q.burst
  local tokens, anchor = tb_view(q, s, now)
  local tat = bucket_tat(q, anchor + sub(burst, tokens) * interval, now, charge, units, taken_at)
  if tat <= now then return { burst, now } end
  local owed = math.min(cdiv(tat - now, interval), burst)
  return { burst - owed, sub(tat, owed * interval) }
end
