-- Sliding window log (tag 2): mirrors ratelimit_core's algorithm/sliding_log.rs.
-- State: { n = count, e = { ts1, cost1, ... } }, sorted by timestamp.
STEP[2] = function(q, s, now, cost)
  local window, limit = q.window, q.limit
  -- An entry counts while now < timestamp + window.
  local live, n = {}, 0
  if s ~= nil then
    local e = s.e
    local first = 1
    while first <= s.n and e[2 * first - 1] + window <= now do
      first = first + 1
    end
    for i = first, s.n do
      n = n + 1
      live[2 * n - 1] = e[2 * i - 1]
      live[2 * n] = e[2 * i]
    end
  end
  local used = 0
  for i = 1, n do used = used + live[2 * i] end
  local probe = probe_of(cost)
  local allowed = used + probe <= limit
  local consumed = allowed and cost > 0

  local retry_after = 0
  if not allowed then
    local freed = 0
    for i = 1, n do
      freed = freed + live[2 * i]
      if sub(used, freed) + probe <= limit then
        retry_after = sub(live[2 * i - 1] + window, now)
        break
      end
    end
  end

  local entries, m = live, n
  if consumed then
    -- Keep entries sorted with one per instant, even if the clock stepped back.
    local at = 1
    while at <= n and live[2 * at - 1] < now do at = at + 1 end
    if at <= n and live[2 * at - 1] == now then
      live[2 * at] = live[2 * at] + cost
    else
      entries, m = {}, 0
      for i = 1, n do
        if i == at then
          m = m + 1
          entries[2 * m - 1] = now
          entries[2 * m] = cost
        end
        m = m + 1
        entries[2 * m - 1] = live[2 * i - 1]
        entries[2 * m] = live[2 * i]
      end
      if at > n then
        m = m + 1
        entries[2 * m - 1] = now
        entries[2 * m] = cost
      end
    end
  end
  local used_after = used
  if consumed then used_after = used + cost end
  local ttl = 0
  if m > 0 then ttl = sub(entries[2 * m - 1] + window, now) end
  return allowed, sub(limit, used_after), ttl, retry_after, { n = m, e = entries }, consumed, ttl
end
