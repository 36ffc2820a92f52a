-- one customer's profile change, atomically (a Redis Cluster, where a batch of customers spans
-- slots and so cannot be one MULTI/EXEC). KEYS[1] the profile; ARGV[1] '1' to replace the whole
-- profile, ARGV[2] how many attributes to remove, their names, then name, value pairs to set
if ARGV[1] == '1' then redis.call('DEL', KEYS[1]) end
local removed = tonumber(ARGV[2])
if removed > 0 then redis.call('HDEL', KEYS[1], unpack(ARGV, 3, 2 + removed)) end
if #ARGV > 2 + removed then redis.call('HSET', KEYS[1], unpack(ARGV, 3 + removed, #ARGV)) end
return 1
