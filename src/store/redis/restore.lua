local key = KEYS[1]
local now = tonumber(ARGV[1])
local m = redis.call('HMGET', key, 'f', 'w')
local w = tonumber(m[2])
if m[1] ~= ARGV[2] or not w or w <= now then
  return 0
end
changed(key)
redis.call('DEL', key)
batched('HSET', key, ARGV, 4, #ARGV)
redis.call('EXPIREAT', key, ARGV[3])
return 1
