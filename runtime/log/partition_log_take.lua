-- Take ownership of one partition, in its hash slot.
-- KEYS: the partition's log stream, its epoch key.
-- ARGV: the owner's group, the groups' common name ("esp-rules"), the offset (the owner reads
--       on after it).
-- Raise the ownership epoch (the outbox refuses the previous owner's publications from now
-- on), destroy every other owner's group (its reads fail with NOGROUP, a blocked one at once),
-- and point the owner's group at the offset. Returns the new epoch.
local stream, epoch = KEYS[1], KEYS[2]
local group, common, offset = ARGV[1], ARGV[2], ARGV[3]
local prefix = common .. ':'
local raised = redis.call('INCR', epoch)
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
return raised
