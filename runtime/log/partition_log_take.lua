-- Take ownership of partitions (one call for all, keys in ARGV like every ESP script).
-- ARGV: epochs hash, the owner's group, the groups' common name ("esp-rules"), n, then per
--       partition: stream, partition, offset (the owner reads on after it).
-- Per partition: raise the ownership epoch (the outbox refuses the previous owner's
-- publications from now on), destroy every other owner's group (its reads fail with NOGROUP,
-- a blocked one at once), and point the owner's group at the offset. Returns the new epochs.
local epochs, group, common, n = ARGV[1], ARGV[2], ARGV[3], tonumber(ARGV[4])
local prefix = common .. ':'
local out = {}
for k = 0, n - 1 do
  local stream, partition, offset = ARGV[5 + 3 * k], ARGV[6 + 3 * k], ARGV[7 + 3 * k]
  out[#out + 1] = redis.call('HINCRBY', epochs, partition, 1)
  local own = false
  if redis.call('EXISTS', stream) == 1 then
    for _, info in ipairs(redis.call('XINFO', 'GROUPS', stream)) do
      local name = info[2]
      if name == group then
        own = true
      elseif name == common or string.sub(name, 1, #prefix) == prefix then
        redis.call('XGROUP', 'DESTROY', stream, name)
      end
    end
  end
  if own then
    redis.call('XGROUP', 'SETID', stream, group, offset)
  else
    redis.call('XGROUP', 'CREATE', stream, group, offset, 'MKSTREAM')
  end
end
return out
