local key = KEYS[1]
local now = tonumber(ARGV[1])
if redis.call('EXISTS', key) == 1 then
  local m = redis.call('HMGET', key, 's', 'i', 'a', 'w')
  local s, i, a, w = tonumber(m[1]), tonumber(m[2]), tonumber(m[3]), tonumber(m[4])
  if s and i and a and deadline(s, i, a) > now then
    return 0
  end
  if w and w > now then
    return 0
  end
  redis.call('DEL', key)
end
batched('HSET', key, ARGV, 3, #ARGV)
redis.call('EXPIREAT', key, ARGV[2])
return 1
