-- ARGV: the batch version key, profile key prefix, batch key prefix up to the version, customers.
-- Per customer: its own hash (HGETALL), then its batch profile: one JSON string (the layout
-- BatchProfiles writes), or a hash of JSON values per attribute (the layout before it, still
-- read), or {} when there is none.
local version = redis.call('GET', ARGV[1])
local out = {}
for i = 4, #ARGV do
  out[#out + 1] = redis.call('HGETALL', ARGV[2] .. ARGV[i])
  if version then
    local key = ARGV[3] .. version .. ':' .. ARGV[i]
    local packed = redis.pcall('GET', key)
    if type(packed) == 'table' and packed.err then
      out[#out + 1] = redis.call('HGETALL', key)
    else
      out[#out + 1] = packed or {}
    end
  else
    out[#out + 1] = {}
  end
end
return out
