-- GCRA (tag 6): mirrors ratekeeper_core's algorithm/gcra.rs. State: { tat }.
STEP[6] = function(q, s, now, cost)
  local interval = q.interval
  local limit_at = now + q.burst * interval
  local base = now
  if s ~= nil and s[1] > now then base = s[1] end
  -- A state from an older quota is capped at a full bucket (gcra.rs).
  if base > limit_at then base = limit_at end
  local probe_tat = base + probe_of(cost) * interval
  local allowed = probe_tat <= limit_at
  local consumed = allowed and cost > 0
  local tat = base
  if consumed then tat = base + cost * interval end
  local ttl = tat - now
  return allowed, fdiv(sub(limit_at, tat), interval), ttl, sub(probe_tat, limit_at), { tat }, consumed, ttl
end
