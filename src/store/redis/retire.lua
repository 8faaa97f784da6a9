local key = KEYS[1]
local now = tonumber(ARGV[1])
local m = redis.call('HMGET', key, 's', 'i', 'a', 'u', 'f', 'w')
local s, i, a = tonumber(m[1]), tonumber(m[2]), tonumber(m[3])
if s and i and a then
  if deadline(s, i, a) <= now then
    return {0, false}
  end
  changed(key)
  redis.call('DEL', key)
  redis.call('HSET', key, 'f', ARGV[2], 'w', ARGV[3])
  redis.call('EXPIREAT', key, ARGV[3])
  return {1, m[4]}
end
local w = tonumber(m[6])
if m[5] == ARGV[2] and w and w > now then
  return {1, false}
end
return {0, false}
