-- An admission: checks and records every request limit, then reserves the request's tokens against the
-- key's, the end user's and the account's monthly quotas, in one call. Request limits are all or nothing:
-- a request refused by one counts against none. A request that passes them counts against the per-minute
-- and per-day limits even if its tokens are then refused (as in the memory backend); only a reserved one
-- holds a concurrency slot.
-- KEYS: 1 key hash, 2 key's in-flight zset, 3 end-user hash, 4 account hash, 5 reservations zset,
--       6 reservation details hash, 7 key's end-users zset (scored by when each stops counting).
-- ARGV: 1 now (µs), 2 day, 3 month, 4 interval (µs), 5 burst, 6 per day, 7 concurrency, 8 id (of the slot
--       and the reservation), 9 lease (µs), 10 ttl (s), 11 end user limited (1/0), 12 its interval (µs, 0:
--       no rate), 13 its burst, 14 its per day (-1: none), 15 cost, 16 key quota (-1: none), 17 end-user
--       quota (-1: none), 18 plan quota, 19 end users per key (-1: no cap), 20 next day's start (µs),
--       21 next month's start (µs).
-- Returns {code, wait µs, tat, key used, key reserved, account used, account reserved}; code 0 admitted and
-- reserved, 1 concurrency, 2 per minute, 3 per day, 4 end user per minute, 5 end user per day, 6 key
-- tokens, 7 end-user tokens, 8 account tokens, 9 end users per key.
local now, day, month = tonumber(ARGV[1]), tonumber(ARGV[2]), tonumber(ARGV[3])
local interval, burst = tonumber(ARGV[4]), tonumber(ARGV[5])
local per_day, concurrency = tonumber(ARGV[6]), tonumber(ARGV[7])
local id, lease, ttl, cost = ARGV[8], tonumber(ARGV[9]), ARGV[10], ARGV[15]
local key, flight, eu, account, users = KEYS[1], KEYS[2], KEYS[3], KEYS[4], KEYS[7]
local has_eu, cap = ARGV[11] == '1', tonumber(ARGV[19])
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

-- The key's end users: those whose limits still count something, each until its score.
if has_eu and cap >= 0 then
  redis.call('ZREMRANGEBYSCORE', users, '-inf', now)
  if not redis.call('ZSCORE', users, eu) and redis.call('ZCARD', users) >= cap then return reply(9, 0) end
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
  -- Until when it counts: its rate's backlog, the day when it has a day limit, the month when it has a
  -- token quota.
  local counts_until = now
  if eu_interval > 0 then
    counts_until = math.max(etat, now) + eu_interval
    redis.call('HSET', eu, 'tat', string.format('%d', counts_until))
  end
  if eu_per_day >= 0 then counts_until = math.max(counts_until, tonumber(ARGV[20])) end
  if tonumber(ARGV[17]) >= 0 then counts_until = math.max(counts_until, tonumber(ARGV[21])) end
  redis.call('HINCRBY', eu, 'dayreq', 1)
  redis.call('EXPIRE', eu, ttl)
  if cap >= 0 and num(redis.call('ZSCORE', users, eu)) < counts_until then
    redis.call('ZADD', users, string.format('%d', counts_until), eu)
    redis.call('EXPIRE', users, ttl)
  end
end
tat = math.max(tat, now) + interval
redis.call('HSET', key, 'tat', string.format('%d', tat))
redis.call('HINCRBY', key, 'dayreq', 1)
redis.call('EXPIRE', key, ttl)
redis.call('EXPIRE', account, ttl)

local function fits(h, quota)
  if quota < 0 then return true end
  local v = redis.call('HMGET', h, 'used', 'reserved')
  return num(v[1]) + num(v[2]) + tonumber(cost) <= quota
end
if not fits(key, tonumber(ARGV[16])) then return reply(6, 0) end
if has_eu and not fits(eu, tonumber(ARGV[17])) then return reply(7, 0) end
if not fits(account, tonumber(ARGV[18])) then return reply(8, 0) end
local until_ = string.format('%d', now + lease)
redis.call('HINCRBY', key, 'reserved', cost)
if has_eu then redis.call('HINCRBY', eu, 'reserved', cost) end
redis.call('HINCRBY', account, 'reserved', cost)
redis.call('ZADD', KEYS[5], until_, id)
redis.call('HSET', KEYS[6], id, cost .. '|' .. key .. '|' .. (has_eu and eu or ''))
redis.call('ZADD', flight, until_, id)
redis.call('EXPIRE', flight, ttl)
redis.call('EXPIRE', KEYS[5], ttl)
redis.call('EXPIRE', KEYS[6], ttl)
return reply(0, 0)
