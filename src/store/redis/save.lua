local key = KEYS[1]
local now = tonumber(ARGV[1])
local m = redis.call('HMGET', key, 's', 'i', 'a', 'u')
local s, i, a = tonumber(m[1]), tonumber(m[2]), tonumber(m[3])
if not (s and i and a) or deadline(s, i, a) <= now then
  return {0, 0, false}
end
changed(key)
if ARGV[2] == '1' then
  local data = {}
  for _, f in ipairs(redis.call('HKEYS', key)) do
    if string.sub(f, 1, 2) == 'd:' then data[#data + 1] = f end
  end
  batched('HDEL', key, data, 1, #data)
end
local removals = tonumber(ARGV[3])
batched('HDEL', key, ARGV, 9, 8 + removals)
batched('HSET', key, ARGV, 9 + removals, #ARGV)
local moved = false
if ARGV[4] == '1' then
  redis.call('HSET', key, 'i', ARGV[5], 'a', ARGV[6], 'p', ARGV[7])
  i, a = tonumber(ARGV[5]), tonumber(ARGV[6])
  moved = true
end
if now - s >= i * tonumber(ARGV[8]) then
  redis.call('HSET', key, 's', ARGV[1])
  s = now
  moved = true
end
if moved then
  local d = deadline(s, i, a)
  redis.call('EXPIREAT', key, d)
  return {1, d, m[4]}
end
return {1, 0, false}
