-- the next version of a document: its counter, seeded once from a history kept before the counter existed
if redis.call('EXISTS', KEYS[1]) == 0 then redis.call('SET', KEYS[1], redis.call('LLEN', KEYS[2])) end
return redis.call('INCR', KEYS[1])
