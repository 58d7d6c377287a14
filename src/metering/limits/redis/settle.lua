-- Ends a reservation (charging ARGV 2 tokens) and frees its concurrency slot. A reservation already
-- ended by its lease is not charged again.
-- KEYS: 1 key hash, 2 key's in-flight zset, 3 end-user hash, 4 account hash, 5 reservations zset,
--       6 reservation details hash.
-- ARGV: 1 reservation id, 2 actual tokens, 3 slot id (the same as the reservation's since one script
--       admits and reserves), 4 month. Returns 1 if it settled, else 0.
redis.call('ZREM', KEYS[2], ARGV[3])
local d = redis.call('HGET', KEYS[6], ARGV[1])
if not d then return 0 end
local amount, _, u = string.match(d, '^(%d+)|([^|]*)|(.*)$')
local month = tonumber(ARGV[4])
roll(KEYS[1], nil, month)
roll(KEYS[4], nil, month)
charge(KEYS[1], amount, ARGV[2])
if u ~= '' then
  roll(KEYS[3], nil, month)
  charge(KEYS[3], amount, ARGV[2])
end
charge(KEYS[4], amount, ARGV[2])
redis.call('ZREM', KEYS[5], ARGV[1])
redis.call('HDEL', KEYS[6], ARGV[1])
return 1
