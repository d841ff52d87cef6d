-- ratekeeper: Storage::compare_and_swap.
-- KEYS[i]: the keys. ARGV[4(i-1) + 1 .. 4]: '1' if a value is expected
-- (else '0'), the expected value, the new value, the new TTL (ms).
-- Writes every new value only if every key holds what is expected; returns 1
-- if it wrote, 0 if not.
for i = 1, #KEYS do
  local b = (i - 1) * 4
  local current = redis.pcall('GET', KEYS[i])
  if type(current) == 'table' then return 0 end
  if ARGV[b + 1] == '1' then
    if current ~= ARGV[b + 2] then return 0 end
  elseif current then
    return 0
  end
end
for i = 1, #KEYS do
  local b = (i - 1) * 4
  redis.call('SET', KEYS[i], ARGV[b + 3], 'PX', ARGV[b + 4])
end
return 1
