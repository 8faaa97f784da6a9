local key = KEYS[1]
local now = tonumber(ARGV[1])
local owner = ARGV[2]
local m = redis.call('HMGET', key, 's', 'i', 'a', 'u', 'f', 'w')
local w = tonumber(m[6])
if m[5] and w and w > now then
  return {2, false, m[5]}
end
local s, i, a = tonumber(m[1]), tonumber(m[2]), tonumber(m[3])
local live = s and i and a and deadline(s, i, a) > now
if owner and live and m[4] ~= owner then
  return {0, false, false}
end
changed(key)
if redis.call('DEL', key) == 0 then
  return {0, false, false}
end
if live then
  return {1, m[4], false}
end
if s and i and a then
  return {0, m[4], false}
end
return {0, false, false}
