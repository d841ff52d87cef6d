-- ratekeeper: Storage::increment.
-- KEYS[1]: the key. ARGV[1]: the amount. ARGV[2]: TTL (ms) if the key is new.
-- An existing key keeps its expiry. Returns { 1, new value } or
-- { 0, error } when the value is not an integer or would overflow.
redis.call('SET', KEYS[1], '0', 'PX', ARGV[2], 'NX')
local r = redis.pcall('INCRBY', KEYS[1], ARGV[1])
if type(r) == 'table' and r.err then return { 0, r.err } end
return { 1, r }
