local key = KEYS[1]
local now = tonumber(ARGV[1])
local m = redis.call('HMGET', key, 's', 'i', 'a')
local s, i, a = tonumber(m[1]), tonumber(m[2]), tonumber(m[3])
if not (s and i and a) or deadline(s, i, a) <= now then
  return 0
end
if now <= s or now - s < i * tonumber(ARGV[2]) then
  return 0
end
redis.call('HSET', key, 's', ARGV[1])
redis.call('EXPIREAT', key, deadline(now, i, a))
return 1
