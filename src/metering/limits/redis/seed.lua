-- Seeds a key's (or end user's) counters from the store's totals, only where Redis holds none yet (a
-- fresh Redis), and adds a seeded key's month tokens to its account.
-- KEYS: 1 key or end-user hash, 2 account hash ('' for an end user).
-- ARGV: 1 day, 2 day requests, 3 month, 4 month tokens, 5 ttl (s). Returns 1 if it seeded.
if redis.call('EXISTS', KEYS[1]) == 1 then return 0 end
redis.call('HSET', KEYS[1], 'day', ARGV[1], 'dayreq', ARGV[2], 'month', ARGV[3], 'used', ARGV[4], 'reserved', 0)
redis.call('EXPIRE', KEYS[1], ARGV[5])
if KEYS[2] ~= '' then
  if tonumber(redis.call('HGET', KEYS[2], 'month') or '0') < tonumber(ARGV[3]) then
    redis.call('HSET', KEYS[2], 'month', ARGV[3], 'used', 0)
  end
  redis.call('HINCRBY', KEYS[2], 'used', ARGV[4])
  redis.call('EXPIRE', KEYS[2], ARGV[5])
end
return 1
