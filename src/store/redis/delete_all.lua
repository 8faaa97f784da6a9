local key = KEYS[1]
local m = redis.call('HMGET', key, 'c', 's', 'i', 'a', 'u', 'f', 'w')
if m[6] then
  changed(key)
  redis.call('DEL', key)
  local w = tonumber(m[7])
  if w and w > tonumber(ARGV[2]) then
    return {0, false, m[6]}
  end
  return {0, false, false}
end
local c = tonumber(m[1])
if not c or c > tonumber(ARGV[1]) then
  return {0, false, false}
end
changed(key)
redis.call('DEL', key)
local s, i, a = tonumber(m[2]), tonumber(m[3]), tonumber(m[4])
if s and i and a and deadline(s, i, a) > tonumber(ARGV[2]) then
  return {1, m[5], false}
end
return {0, m[5], false}
