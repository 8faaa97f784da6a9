local key = KEYS[1]
redis.call('ZADD', key, 'GT', ARGV[2], ARGV[1])
if ARGV[3] then
  if redis.call('TTL', key) == -1 then
    redis.call('EXPIREAT', key, ARGV[3])
  else
    redis.call('EXPIREAT', key, ARGV[3], 'GT')
  end
end
return 1
