-- Fixed window (tag 1): mirrors ratekeeper_core's algorithm/fixed_window.rs.
-- State: { window_start, count }.

-- What a window that ended with `count` passes on: the excess over the
-- limit, at most one limit.
local function fw_carried(q, count)
  return math.min(sub(count, q.limit), q.limit)
end

-- The windows around `now` (calendar.rs's Span): the start and end of the
-- one it falls in, the next one's length, the start of the one before
-- (nil for none). On a calendar, the window among the boundaries given that
-- `now` falls in (clamped to them: clocks a whole window apart).
local function fw_span(q, now)
  local b = q.bounds
  if b == nil then
    local w = q.window
    local start = now - math.fmod(now, w)
    local prev = nil
    if start >= w then prev = start - w end
    return start, start + w, w, prev
  end
  local j = 2
  if now >= b[4] then j = 4 elseif now >= b[3] then j = 3 end
  return b[j], b[j + 1], b[j + 2] - b[j + 1], b[j - 1]
end

-- The window's start and count, from the span's start and end and the
-- start of the one before (fixed_window.rs's view): a state counted in this
-- window under another alignment counts in it; a later one (the clock
-- stepped back) stays.
local function fw_view(q, s, start, stop, prev)
  if s ~= nil and s[1] >= start and s[1] < stop then return start, s[2] end
  if s ~= nil and s[1] >= stop then return s[1], s[2] end
  if s ~= nil and s[1] == prev then return start, fw_carried(q, s[2]) end
  return start, 0
end

STEP[1] = function(q, s, now, cost)
  local limit = q.limit
  local span_start, span_end, window, prev = fw_span(q, now)
  local start, count = fw_view(q, s, span_start, span_end, prev)
  -- A state from a later window (the clock stepped back) ends with it.
  local stop = span_end
  if start > span_start then stop = start + window end
  local until_end = sub(stop, now)
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
  local span_start, span_end, _, prev = fw_span(q, now)
  local start, count = fw_view(q, s, span_start, span_end, prev)
  if charge then
    count = math.min(count + units, 2 * q.limit)
  else
    if taken_at ~= nil and taken_at < start then return nil end
    count = sub(count, units)
  end
  -- Nothing counted: the window now falls in (fixed_window.rs).
  if count == 0 then start = span_start end
  return { start, count }
end
