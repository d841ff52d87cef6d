-- Fixed window (tag 1): mirrors ratekeeper_core's algorithm/fixed_window.rs.
-- State: { window_start, count }.

-- What a window that ended with `count` passes on: the excess over the
-- limit, at most one limit.
local function fw_carried(q, count)
  return math.min(sub(count, q.limit), q.limit)
end

-- The window `now` falls in: its start and count.
local function fw_view(q, s, now)
  local window = q.window
  local aligned = now - math.fmod(now, window)
  if s ~= nil and s[1] >= aligned then return s[1], s[2] end
  if s ~= nil and s[1] + window == aligned then return aligned, fw_carried(q, s[2]) end
  return aligned, 0
end

STEP[1] = function(q, s, now, cost)
  local window, limit = q.window, q.limit
  local start, count = fw_view(q, s, now)
  local until_end = sub(start + window, now)
  local probe = probe_of(cost)
  local allowed = count + probe <= limit
  local consumed = allowed and cost > 0
  local next_count = count
  if consumed then next_count = count + cost end
  local ttl = until_end
  if next_count == 0 then
    ttl = 0
  elseif next_count > limit then
    ttl = until_end + window
  end
  local retry = until_end
  if fw_carried(q, count) + probe > limit then retry = until_end + window end
  return allowed, sub(limit, next_count), ttl, retry, { start, next_count }, consumed, ttl
end

ADJUST[1] = function(q, s, now, charge, units, taken_at)
  local start, count = fw_view(q, s, now)
  if charge then
    count = math.min(count + units, 2 * q.limit)
  else
    if taken_at ~= nil and taken_at < start then return nil end
    count = sub(count, units)
  end
  -- Nothing counted: the window now falls in (fixed_window.rs).
  if count == 0 then start = now - math.fmod(now, q.window) end
  return { start, count }
end
