local function batched(command, key, list, first, last)
  local batch = {}
  for j = first, last do
    batch[#batch + 1] = list[j]
    if #batch == 200 then
      redis.call(command, key, unpack(batch))
      batch = {}
    end
  end
  if #batch > 0 then
    redis.call(command, key, unpack(batch))
  end
end
local function deadline(s, i, a)
  return math.min(s + i, a)
end
local function changed(key)
  local n = #key
  redis.call('PUBLISH', string.sub(key, 1, n - 66) .. 'changed', string.sub(key, n - 63))
end
