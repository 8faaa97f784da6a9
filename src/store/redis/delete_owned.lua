if redis.call('HGET', KEYS[1], 'u') == ARGV[1] then
  changed(KEYS[1])
  redis.call('DEL', KEYS[1])
  return 1
end
return 0
