local key = KEYS[1]
local now = tonumber(ARGV[1])
local removed = 0
for j = 2, #ARGV do
  local score = redis.call('ZSCORE', key, ARGV[j])
  if score and tonumber(score) <= now then
    removed = removed + redis.call('ZREM', key, ARGV[j])
  end
end
return removed
