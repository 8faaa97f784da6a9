local key = KEYS[1]
redis.call('ZREMRANGEBYSCORE', key, '-inf', ARGV[1])
redis.call('ZADD', key, 'GT', ARGV[3], ARGV[2])
local top = redis.call('ZRANGE', key, -1, -1, 'WITHSCORES')
redis.call('EXPIREAT', key, top[2])
return 1
