-- ARGV: config-version key, ttl_s, n buckets, bucket keys (today first), n groups,
--       then per group: stream, partition, msgpack array of ids, payload
-- A bucket is a hash: event id -> '<partition>/<log entry id>' (where the event went).
local config_version = redis.call('GET', ARGV[1]) or '0'
local ttl, nb = ARGV[2], tonumber(ARGV[3])
local buckets = {}
for b = 1, nb do buckets[b] = ARGV[3 + b] end
local groups = tonumber(ARGV[4 + nb])
local i = 5 + nb
local out = {}
for g = 1, groups do
  local stream, partition, ids, payload = ARGV[i], ARGV[i + 1], cmsgpack.unpack(ARGV[i + 2]), ARGV[i + 3]
  i = i + 4
  local n = #ids
  local seen = {}
  for start = 1, n, 4000 do
    local stop = math.min(start + 3999, n)
    for b = 1, nb do
      local found = redis.call('HMGET', buckets[b], unpack(ids, start, stop))
      for j = 1, stop - start + 1 do
        if found[j] then seen[start + j - 1] = true end
      end
    end
  end
  local dups, fresh = {}, {}
  for j = 1, n do
    if seen[j] then dups[#dups + 1] = j - 1 else fresh[#fresh + 1] = ids[j] end
  end
  local id = false
  if #fresh > 0 then
    id = redis.call('XADD', stream, '*', 'b', payload, 'd', table.concat(dups, ','), 'v', config_version)
    local where = partition .. '/' .. id
    for start = 1, #fresh, 2000 do
      local args = {}
      for j = start, math.min(start + 1999, #fresh) do
        args[#args + 1] = fresh[j]
        args[#args + 1] = where
      end
      redis.call('HSET', buckets[1], unpack(args))
    end
    redis.call('EXPIRE', buckets[1], ttl)
  end
  out[#out + 1] = {id, dups}
end
return out
