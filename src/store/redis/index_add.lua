local key = KEYS[1]
redis.call('ZADD', key, 'GT', ARGV[2], ARGV[1])
local top = redis.call('ZRANGE', key, -1, -1, 'WITHSCORES')
redis.call('EXPIREAT', key, top[2])
return 1
