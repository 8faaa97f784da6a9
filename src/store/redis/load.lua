local key = KEYS[1]
local h = redis.call('HGETALL', key)
if #h == 0 then
  return false
end
local s, i, a, forward
for j = 1, #h, 2 do
  local name = h[j]
  if name == 's' then s = tonumber(h[j + 1])
  elseif name == 'i' then i = tonumber(h[j + 1])
  elseif name == 'a' then a = tonumber(h[j + 1])
  elseif name == 'f' then forward = true end
end
if not (s and i and a) then
  if forward then
    return false
  end
  -- Neither a session nor a forward: the client reports it as corrupt.
  return cmsgpack.pack(h)
end
local now = tonumber(ARGV[1])
if deadline(s, i, a) <= now then
  redis.call('DEL', key)
  return false
end
if now - s >= i * tonumber(ARGV[2]) then
  redis.call('HSET', key, 's', ARGV[1])
  redis.call('EXPIREAT', key, deadline(now, i, a))
end
return cmsgpack.pack(h)
