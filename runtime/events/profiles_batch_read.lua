-- One customer's batch profile on a Redis Cluster (KEYS[1]): the packed JSON string, or the
-- hash of the layout before it, or {} when there is none (see profiles_read.lua).
local packed = redis.pcall('GET', KEYS[1])
if type(packed) == 'table' and packed.err then
  return redis.call('HGETALL', KEYS[1])
end
return packed or {}
