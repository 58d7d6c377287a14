-- Shared by every tollgate counters script (src/metering/limits/redis/mod.rs says what each key holds).
-- Amounts stay strings from ARGV into HINCRBY, so no number is ever written in Lua's float notation.
local function num(v) return tonumber(v) or 0 end

-- Starts a new day (day requests back to zero) or month (used tokens back to zero, reservations kept)
-- where the caller's day or month is later than the one the hash counts.
local function roll(h, day, month)
  if day and num(redis.call('HGET', h, 'day')) < day then
    redis.call('HSET', h, 'day', day, 'dayreq', 0)
  end
  if month and num(redis.call('HGET', h, 'month')) < month then
    redis.call('HSET', h, 'month', month, 'used', 0)
  end
end

-- Ends a reservation on one counters hash: `amount` no longer reserved, `actual` used.
local function charge(h, amount, actual)
  if h == '' then return end
  -- Redis reads no integer in '-0'.
  if amount ~= '0' then redis.call('HINCRBY', h, 'reserved', '-' .. amount) end
  redis.call('HINCRBY', h, 'used', actual)
end

-- Ends the account's reservations whose lease ran out (their holder vanished), charging each its whole
-- amount, like the memory backend's sweep; at most 64 per call, the rest at the next.
local function expire(res, resd, account, now, month)
  local ids = redis.call('ZRANGEBYSCORE', res, '-inf', now, 'LIMIT', 0, 64)
  for _, id in ipairs(ids) do
    local d = redis.call('HGET', resd, id)
    if d then
      local amount, k, u = string.match(d, '^(%d+)|([^|]*)|(.*)$')
      if amount then
        roll(k, nil, month)
        charge(k, amount, amount)
        if u ~= '' then
          roll(u, nil, month)
          charge(u, amount, amount)
        end
        charge(account, amount, amount)
      end
    end
    redis.call('ZREM', res, id)
    redis.call('HDEL', resd, id)
  end
  return #ids
end
