-- GCRA (tag 6): mirrors ratekeeper_core's algorithm/gcra.rs. State: { tat }.
-- The TAT at now, and whether it was capped at one bucket of debt (gcra.rs).
local function gcra_base(q, s, now)
  local most = now + 2 * q.burst * q.interval
  if s == nil then return now, false end
  if s[1] > most then return most, true end
  return math.max(s[1], now), false
end

STEP[6] = function(q, s, now, cost)
  local interval = q.interval
  local limit_at = now + q.burst * interval
  -- Past limit_at the TAT is a debt (gcra.rs).
  local base, capped = gcra_base(q, s, now)
  local probe_tat = base + probe_of(cost) * interval
  local allowed = probe_tat <= limit_at
  local consumed = allowed and cost > 0
  local tat = base
  if consumed then tat = base + cost * interval end
  local ttl = tat - now
  return allowed, fdiv(sub(limit_at, tat), interval), ttl, sub(probe_tat, limit_at), { tat }, consumed, ttl, capped
end

ADJUST[6] = function(q, s, now, charge, units, taken_at)
  local base = gcra_base(q, s, now)
  return { bucket_tat(q, base, now, charge, units, taken_at) }
end
