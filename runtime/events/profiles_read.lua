-- ARGV: the batch version key, profile key prefix, batch key prefix up to the version, customers
local version = redis.call('GET', ARGV[1])
local out = {}
for i = 4, #ARGV do
  out[#out + 1] = redis.call('HGETALL', ARGV[2] .. ARGV[i])
  out[#out + 1] = version and redis.call('HGETALL', ARGV[3] .. version .. ':' .. ARGV[i]) or {}
end
return out
