-- Sliding window counter (tag 3): mirrors ratekeeper_core's
-- algorithm/sliding_window_counter.rs. State: { window_start, previous, current }.

-- ceil(previous * left / window): the previous window's share.
local function weighted(previous, left, window)
  local q, r = muldiv(previous, left, window)
  if r > 0 then return q + 1 end
  return q
end

-- floor(room * window / count), at most window.
local function overlap_allowed(room, window, count)
  if count == 0 or room >= count then return window end
  local q = muldiv(room, window, count)
  return q
end

-- The counts as of the window now falls in: start, previous, current.
local function swc_view(q, s, now)
  local window = q.window
  local aligned = now - math.fmod(now, window)
  if s ~= nil and s[1] >= aligned then return s[1], s[2], s[3] end
  if s ~= nil and s[1] + window == aligned then return aligned, s[3], 0 end
  return aligned, 0, 0
end

STEP[3] = function(q, s, now, cost)
  local window, limit = q.window, q.limit
  local start, previous, current = swc_view(q, s, now)
  local elapsed = math.min(sub(now, start), window)
  local estimate = weighted(previous, window - elapsed, window) + current
  local probe = probe_of(cost)
  local allowed = estimate + probe <= limit
  local consumed = allowed and cost > 0
  local next_current = current
  if consumed then next_current = current + cost end
  local finish = start + window
  local ttl = 0
  if next_current > 0 then
    ttl = sub(finish + window, now)
  elseif previous > 0 then
    ttl = sub(finish, now)
  end

  local retry_after = 0
  if not allowed then
    local room = sub(limit, probe)
    local at
    if current <= room then
      -- Still this window: wait until the previous window weighs little enough.
      at = sub(finish, overlap_allowed(room - current, window, previous))
    else
      -- Next window: this window's count becomes the weighted one.
      at = finish + (window - overlap_allowed(room, window, current))
    end
    retry_after = sub(at, now)
  end
  local spent = estimate
  if consumed then spent = estimate + cost end
  return allowed, sub(limit, spent), ttl, retry_after, { start, previous, next_current }, consumed, ttl
end

ADJUST[3] = function(q, s, now, charge, units, taken_at)
  local start, previous, current = swc_view(q, s, now)
  if charge then
    current = math.min(current + units, 2 * q.limit)
  elseif taken_at == nil then
    local c = math.min(units, current)
    current = current - c
    previous = sub(previous, units - c)
  elseif taken_at >= start then
    current = sub(current, units)
  elseif taken_at + q.window >= start then
    previous = sub(previous, units)
  else
    return nil
  end
  -- Nothing counted: the window now falls in (sliding_window_counter.rs).
  if previous == 0 and current == 0 then start = now - math.fmod(now, q.window) end
  return { start, previous, current }
end
