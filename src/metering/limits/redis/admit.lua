-- Admission against the request limits, all or nothing.
-- KEYS: 1 key hash, 2 key's in-flight zset, 3 end-user hash, 4 account hash, 5 reservations zset,
--       6 reservation details hash.
-- ARGV: 1 now (µs), 2 day, 3 month, 4 interval (µs), 5 burst, 6 per day, 7 concurrency, 8 slot id,
--       9 lease (µs), 10 ttl (s), 11 end user limited (1/0), 12 its interval (µs, 0: no rate),
--       13 its burst, 14 its per day (-1: none).
-- Returns {code, wait µs, tat, key used, key reserved, account used, account reserved}; code 0 admitted,
-- 1 concurrency, 2 per minute, 3 per day, 4 end user per minute, 5 end user per day.
local now, day, month = tonumber(ARGV[1]), tonumber(ARGV[2]), tonumber(ARGV[3])
local interval, burst = tonumber(ARGV[4]), tonumber(ARGV[5])
local per_day, concurrency = tonumber(ARGV[6]), tonumber(ARGV[7])
local lease, ttl = tonumber(ARGV[9]), ARGV[10]
local key, flight, eu, account = KEYS[1], KEYS[2], KEYS[3], KEYS[4]
local has_eu = ARGV[11] == '1'
expire(KEYS[5], KEYS[6], account, now, month)
roll(key, day, month)
roll(account, nil, month)
if has_eu then roll(eu, day, month) end
redis.call('ZREMRANGEBYSCORE', flight, '-inf', now)
local tat = num(redis.call('HGET', key, 'tat'))
local function reply(code, wait)
  local k = redis.call('HMGET', key, 'used', 'reserved')
  local a = redis.call('HMGET', account, 'used', 'reserved')
  return {code, wait, tat, num(k[1]), num(k[2]), num(a[1]), num(a[2])}
end
if redis.call('ZCARD', flight) >= concurrency then return reply(1, 0) end
local allow_at = math.max(tat, now) - interval * (burst - 1)
if now < allow_at then return reply(2, allow_at - now) end
if num(redis.call('HGET', key, 'dayreq')) >= per_day then return reply(3, 0) end
if has_eu then
  local eu_interval, eu_burst, eu_per_day = tonumber(ARGV[12]), tonumber(ARGV[13]), tonumber(ARGV[14])
  local etat = num(redis.call('HGET', eu, 'tat'))
  if eu_interval > 0 then
    local eu_allow = math.max(etat, now) - eu_interval * (eu_burst - 1)
    if now < eu_allow then return reply(4, eu_allow - now) end
  end
  if eu_per_day >= 0 and num(redis.call('HGET', eu, 'dayreq')) >= eu_per_day then return reply(5, 0) end
  if eu_interval > 0 then
    redis.call('HSET', eu, 'tat', string.format('%d', math.max(etat, now) + eu_interval))
  end
  redis.call('HINCRBY', eu, 'dayreq', 1)
  redis.call('EXPIRE', eu, ttl)
end
tat = math.max(tat, now) + interval
redis.call('HSET', key, 'tat', string.format('%d', tat))
redis.call('HINCRBY', key, 'dayreq', 1)
redis.call('EXPIRE', key, ttl)
redis.call('ZADD', flight, string.format('%d', now + lease), ARGV[8])
redis.call('EXPIRE', flight, ttl)
redis.call('EXPIRE', account, ttl)
return reply(0, 0)
