-- ratekeeper: shared part of every decision script.
--
-- Numbers are Lua doubles. Every quantity the algorithms handle stays below
-- 2^53 (times are microseconds since the epoch, and the core bounds every
-- horizon by 2^49 µs), where doubles are exact integers. A stored field at or
-- above 2^53 is treated as corrupt state rather than computed inexactly.
-- Products that can exceed 2^53 (the sliding window counter's weights) go
-- through muldiv, which is exact.

local TWO53 = 9007199254740992
local TWO52 = 4503599627370496

-- floor(a / b) for integers 0 <= a < 2^53, b > 0.
local function fdiv(a, b)
  local q = math.floor(a / b)
  local r = a - q * b
  if r < 0 then
    q = q - 1
  elseif r >= b then
    q = q + 1
  end
  return q
end

-- u64::saturating_sub
local function sub(a, b)
  if a > b then return a - b end
  return 0
end

-- cost.max(1): a peek asks about one unit.
local function probe_of(cost)
  if cost < 1 then return 1 end
  return cost
end

-- floor(a * b / c) and (a * b) mod c, exactly, for integers a, b < 2^53,
-- c > 0, when the quotient is below 2^53.
local function muldiv(a, b, c)
  local p = a * b
  if p < TWO52 then
    -- The product is exact.
    local q = fdiv(p, c)
    return q, p - q * c
  end
  -- Shift-and-add over b's bits, keeping a * (bits so far) as q * c + r.
  local qa = fdiv(a, c)
  local ra = a - qa * c
  local bit = 1
  while bit * 2 <= b do bit = bit * 2 end
  local q, r = 0, 0
  while bit >= 1 do
    q = q * 2
    r = r * 2
    if r >= c then q = q + 1; r = r - c end
    if b >= bit then
      b = b - bit
      q = q + qa
      r = r + ra
      if r >= c then q = q + 1; r = r - c end
    end
    bit = bit / 2
  end
  return q, r
end

-- The stored state format of ratekeeper_core::state:
-- u8 version, u8 algorithm tag, u64 LE blocked_until, then the algorithm's
-- u64 LE fields. The sliding log (tag 2) and concurrency (tag 7, whose
-- leases are a log's pairs) have a u32 LE count and pairs instead:
-- (timestamp, running total) in version 2, (timestamp, cost) in version 1,
-- which is still read for the sliding log. Every other algorithm is
-- version 1.
local FIELDS = { [1] = 2, [3] = 3, [4] = 2, [5] = 2, [6] = 1 }
local LOG = { [2] = true, [7] = true }
local UNPACK = { '<I8', '<I8I8', '<I8I8I8' }
local PACK = { '<BBI8I8', '<BBI8I8I8', '<BBI8I8I8I8' }

-- Where the sliding log's pairs start (1-based).
local LOG_PAIRS = 15
-- How much of a value the first read takes: every state but a sliding log
-- of more than three entries fits.
local HEAD = 64

-- Whether this script holds the sliding log's step (sliding_window_log.lua
-- sets it): only then can a state be longer than HEAD. A call names the
-- steps it may meet (decide's `has_log`): the library holds every step.
local HAS_LOG = false

-- Reads the state at `key`: the value, or nil when there is none. A long
-- sliding log is not read whole (fetching a 160 kB value into Lua costs far
-- more than deciding on it): only its first HEAD bytes, the rest lazily
-- (log_pair). Returns the value read and whether it is only the head. A
-- call without the log (`has_log` false) reads with one GET (a state of
-- another algorithm found there is no state of its rules either way).
local function read_state(key, has_log)
  if not has_log then return redis.pcall('GET', key), false end
  local head = redis.pcall('GETRANGE', key, 0, HEAD - 1)
  if type(head) == 'table' then return head, false end
  if #head == 0 then
    -- No value, or an empty one (which is corrupt).
    return redis.pcall('GET', key), false
  end
  if #head == HEAD and string.byte(head, 1) == 2 then return head, true end
  if #head == HEAD then return redis.pcall('GET', key), false end
  return head, false
end

-- A decoded state: { tag =, blocked =, [1..k] = fields } or, for the log,
-- a view of its pairs that is read lazily, so a decision on a long log
-- reads O(log n) of them: { tag = 2, blocked =, n = count, raw = bytes (or
-- key = the key, to read them from), at = offset of the first pair,
-- shift = what to subtract from every running total } (see log_pair).
-- `v` is the value, or its head when `partial` (then `key` holds the rest).
-- Returns nil and a reason for anything that is not valid state.
local function decode(v, partial, key)
  local len = #v
  if len < 1 then return nil, 'value is truncated' end
  local version = string.byte(v, 1)
  if version ~= 1 and version ~= 2 then return nil, 'unknown format version' end
  if len < 10 then return nil, 'value is truncated' end
  local tag = string.byte(v, 2)
  if version == 2 and not LOG[tag] or version == 1 and tag == 7 then
    return nil, 'unknown format version'
  end
  local blocked = struct.unpack('<I8', v, 3)
  if blocked >= TWO53 then return nil, 'a time at or beyond 2^53 microseconds' end
  if LOG[tag] then
    if len < 14 then return nil, 'value is truncated' end
    local n = struct.unpack('<I4', v, 11)
    if partial then len = redis.call('STRLEN', key) end
    if len - 14 ~= n * 16 then
      return nil, 'sliding log length does not match its count'
    end
    if version == 2 then
      local view = { tag = tag, blocked = blocked, n = n, at = LOG_PAIRS, shift = 0 }
      if not partial then
        view.raw = v
        return view
      end
      -- The pairs the head holds whole are known already.
      view.key = key
      view.memo = {}
      for i = 1, math.floor((len - 14) / 16) do
        if LOG_PAIRS + 16 * i - 1 > #v then break end
        view.memo[i] = { struct.unpack('<I8I8', v, LOG_PAIRS + 16 * (i - 1)) }
      end
      return view
    end
    -- Version 1 (read whole): costs become running totals, once.
    local parts = {}
    local last, total = 0, 0
    local pos = LOG_PAIRS
    for i = 1, n do
      local ts, c
      ts, c, pos = struct.unpack('<I8I8', v, pos)
      if ts >= TWO53 or c >= TWO53 then
        return nil, 'a value at or beyond 2^53'
      end
      if ts < last then return nil, 'sliding log is not sorted' end
      last = ts
      total = total + c
      if total >= TWO53 then return nil, 'a value at or beyond 2^53' end
      parts[i] = struct.pack('<I8I8', ts, total)
    end
    return { tag = 2, blocked = blocked, n = n, raw = table.concat(parts), at = 1, shift = 0 }
  end
  local k = FIELDS[tag]
  if k == nil then return nil, 'unknown algorithm tag' end
  if len < 10 + 8 * k then return nil, 'value is truncated' end
  if len > 10 + 8 * k then return nil, 'trailing bytes' end
  local a, b, c = struct.unpack(UNPACK[k], v, 11)
  local s = { tag = tag, blocked = blocked }
  s[1] = a
  if k >= 2 then s[2] = b end
  if k >= 3 then s[3] = c end
  for i = 1, k do
    if s[i] >= TWO53 then return nil, 'a value at or beyond 2^53' end
  end
  return s
end

-- `len` bytes of a sliding log view from its byte `from` (1-based).
local function log_bytes(s, from, len)
  if len <= 0 then return '' end
  if s.raw ~= nil then return string.sub(s.raw, from, from + len - 1) end
  return redis.call('GETRANGE', s.key, from - 1, from + len - 2)
end

-- Pair i (1-based) of a sliding log view: its timestamp and running total.
-- Pairs of a view read from its key are kept (view.memo) once read.
-- A value a decoded view cannot vouch for (it reads lazily) is reported as
-- corrupt state through error(), which decide.lua turns into its answer.
local function log_pair(s, i)
  local memo = s.memo and s.memo[i]
  local ts, total
  if memo then
    ts, total = memo[1], memo[2]
  elseif s.raw ~= nil then
    -- Read in place, without cutting the pair out first.
    ts, total = struct.unpack('<I8I8', s.raw, s.at + 16 * (i - 1))
  else
    ts, total = struct.unpack('<I8I8', log_bytes(s, s.at + 16 * (i - 1), 16))
    if s.memo then s.memo[i] = { ts, total } end
  end
  if ts >= TWO53 or total >= TWO53 then
    error({ corrupt = 'a value at or beyond 2^53' })
  end
  return ts, total - s.shift
end

-- Pairs a search reads in one GETRANGE once it has narrowed to them.
local LOG_BLOCK = 64

-- The first i in [lo, hi) for which pred(s, i, a, b) holds (pred is
-- false, then true), or hi. The predicate takes its arguments rather than
-- closing over them, so a search makes no closure. It gallops from lo (lo, lo + 1, lo + 3, lo + 7, …), so an
-- answer near lo costs few reads: a denial's first live pair is never more
-- than the request's cost from the start of the log, since the log held at
-- most the limit after its last admission. On a view read from its key,
-- halving then goes pair by pair only until LOG_BLOCK pairs are left, which
-- are read at once.
local function log_search(s, lo, hi, pred, a, b)
  local step = 1
  local probe = lo
  while probe < hi and not pred(s, probe, a, b) do
    lo = probe + 1
    probe = lo + step
    step = step * 2
  end
  if probe < hi then hi = probe end
  if s.raw == nil then
    while hi - lo > LOG_BLOCK do
      local mid = math.floor((lo + hi) / 2)
      if pred(s, mid, a, b) then hi = mid else lo = mid + 1 end
    end
    local missing = false
    for i = lo, hi - 1 do
      if s.memo[i] == nil then missing = true end
    end
    if missing then
      local bytes = log_bytes(s, s.at + 16 * (lo - 1), 16 * (hi - lo))
      for i = lo, hi - 1 do
        if s.memo[i] == nil then
          s.memo[i] = { struct.unpack('<I8I8', bytes, 16 * (i - lo) + 1) }
        end
      end
    end
  end
  while lo < hi do
    local mid = math.floor((lo + hi) / 2)
    if pred(s, mid, a, b) then hi = mid else lo = mid + 1 end
  end
  return lo
end

local function encode(s)
  if LOG[s.tag] then
    local head = struct.pack('<BBI8I4', 2, s.tag, s.blocked, s.n)
    local bytes = log_bytes(s, s.at, 16 * s.n)
    if s.shift == 0 then return head .. bytes end
    local flat = { n = s.n, raw = bytes, at = 1, shift = s.shift }
    local parts = { head }
    for i = 1, s.n do
      local ts, total = log_pair(flat, i)
      parts[i + 1] = struct.pack('<I8I8', ts, total)
    end
    return table.concat(parts)
  end
  local k = FIELDS[s.tag]
  if k == 1 then return struct.pack(PACK[1], 1, s.tag, s.blocked, s[1]) end
  if k == 2 then return struct.pack(PACK[2], 1, s.tag, s.blocked, s[1], s[2]) end
  return struct.pack(PACK[3], 1, s.tag, s.blocked, s[1], s[2], s[3])
end

-- Algorithm steps, by tag. Each is step(q, s, now, cost) with
-- q = { limit =, window =, burst =, interval = } and s the decoded state of
-- the same algorithm (or nil), and returns
-- allowed, remaining, reset_after, retry_after, next state, consumed, ttl
-- and (GCRA and the token bucket) whether a denial must write the state
-- all the same, exactly as ratekeeper_core's algorithm::step does.
local STEP = {}
-- Changes after the fact, by tag: adjust(q, s, now, charge, units,
-- taken_at) with `charge` true for a charge and false for a refund, and
-- `taken_at` the time of the refunded units or nil; returns the next state,
-- or nil when nothing changes, exactly as ratekeeper_core's
-- algorithm::adjust does.
local ADJUST = {}

-- ceil(a / b) for integers 0 <= a < 2^53, b > 0.
local function cdiv(a, b)
  return fdiv(a + b - 1, b)
end

-- A bucket's theoretical arrival time after a change, from `tat` (at or
-- after now): mirrors algorithm/mod.rs's bucket_tat and give_back. A
-- charge moves it on; a refund moves it back by the units that have not
-- refilled since taken_at (all of them without a time), never before now;
-- either way at most two buckets past now.
local function bucket_tat(q, tat, now, charge, units, taken_at)
  local interval = q.interval
  local most = now + 2 * q.burst * interval
  if charge then
    return math.min(tat + units * interval, most)
  end
  local span = units * interval
  if taken_at ~= nil then span = math.min(span, sub(taken_at + span, now)) end
  return math.min(math.max(sub(tat, span), now), most)
end
