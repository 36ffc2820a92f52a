-- many customers' profile changes (one Redis, not a cluster: see profiles_put.lua there).
-- KEYS: the profile hashes. ARGV[1] '1' to replace each profile whole (DEL first), ARGV[2] a
-- TTL in seconds for each hash written ('0': none), ARGV[3] msgpack: per key, in order,
-- [names to remove, [name, value, name, value, ...] to set]. One call and one packed argument
-- instead of a command (or an argument) per attribute: packing them was most of a bulk write.
local unpack = unpack
local replace, ttl = ARGV[1] == '1', tonumber(ARGV[2])
local rows = cmsgpack.unpack(ARGV[3])
for k = 1, #KEYS do
  local key, removed, pairs = KEYS[k], rows[k][1], rows[k][2]
  if replace then
    redis.call('DEL', key)
  elseif #removed > 0 then
    redis.call('HDEL', key, unpack(removed))
  end
  if #pairs > 0 then
    redis.call('HSET', key, unpack(pairs))
    if ttl > 0 then redis.call('EXPIRE', key, ttl) end
  end
end
return #KEYS
