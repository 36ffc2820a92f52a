-- A batch version's profiles, one packed value per customer (one Redis, not a cluster).
-- KEYS: the customers' keys of the version. ARGV[1] a TTL in seconds ('0': none), then one
-- value per key: the customer's attributes as one JSON object ('': none, the key is removed).
-- SET replaces whatever the key held, a hash of the layout before included.
local ttl = ARGV[1]
for k = 1, #KEYS do
  local value = ARGV[k + 1]
  if value == '' then
    redis.call('DEL', KEYS[k])
  elseif ttl ~= '0' then
    redis.call('SET', KEYS[k], value, 'EX', ttl)
  else
    redis.call('SET', KEYS[k], value)
  end
end
return #KEYS
