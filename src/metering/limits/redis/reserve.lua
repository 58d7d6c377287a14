-- A token reservation against the key's, the end user's and the account's monthly quotas, all or
-- nothing; a refusal frees the request's concurrency slot.
-- KEYS: 1 key hash, 2 key's in-flight zset, 3 end-user hash, 4 account hash, 5 reservations zset,
--       6 reservation details hash.
-- ARGV: 1 now (µs), 2 month, 3 cost, 4 key quota (-1: none), 5 end-user quota (-1: none),
--       6 plan quota, 7 reservation id, 8 lease (µs), 9 slot id, 10 end user limited (1/0), 11 ttl (s).
-- Returns {code, key used, key reserved, account used, account reserved}; code 0 reserved,
-- 6 key tokens, 7 end-user tokens, 8 account tokens.
local now, month, cost = tonumber(ARGV[1]), tonumber(ARGV[2]), tonumber(ARGV[3])
local key, flight, eu, account = KEYS[1], KEYS[2], KEYS[3], KEYS[4]
local has_eu = ARGV[10] == '1'
expire(KEYS[5], KEYS[6], account, now, month)
roll(key, nil, month)
roll(account, nil, month)
if has_eu then roll(eu, nil, month) end
local function fits(h, quota)
  if quota < 0 then return true end
  local v = redis.call('HMGET', h, 'used', 'reserved')
  return num(v[1]) + num(v[2]) + cost <= quota
end
local code = 0
if not fits(key, tonumber(ARGV[4])) then
  code = 6
elseif has_eu and not fits(eu, tonumber(ARGV[5])) then
  code = 7
elseif not fits(account, tonumber(ARGV[6])) then
  code = 8
end
if code ~= 0 then
  redis.call('ZREM', flight, ARGV[9])
else
  local until_ = string.format('%d', now + tonumber(ARGV[8]))
  redis.call('HINCRBY', key, 'reserved', ARGV[3])
  if has_eu then
    redis.call('HINCRBY', eu, 'reserved', ARGV[3])
    redis.call('EXPIRE', eu, ARGV[11])
  end
  redis.call('HINCRBY', account, 'reserved', ARGV[3])
  redis.call('ZADD', KEYS[5], until_, ARGV[7])
  redis.call('HSET', KEYS[6], ARGV[7], ARGV[3] .. '|' .. key .. '|' .. (has_eu and eu or ''))
  redis.call('ZADD', flight, until_, ARGV[9])
  redis.call('EXPIRE', KEYS[5], ARGV[11])
  redis.call('EXPIRE', KEYS[6], ARGV[11])
end
local k = redis.call('HMGET', key, 'used', 'reserved')
local a = redis.call('HMGET', account, 'used', 'reserved')
return {code, num(k[1]), num(k[2]), num(a[1]), num(a[2])}
