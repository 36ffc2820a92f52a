-- A tag action on a customer's profile: set or clear one tag in its sorted JSON list.
-- KEYS: the profile. ARGV: 'set' | 'clear', the tag.
local raw = redis.call('HGET', KEYS[1], 'tags')
local ok, tags = pcall(cjson.decode, raw or '[]')
if not ok or type(tags) ~= 'table' then tags = {} end
local out = {}
for _, t in ipairs(tags) do if t ~= ARGV[2] then out[#out + 1] = t end end
if ARGV[1] == 'set' then out[#out + 1] = ARGV[2] end
table.sort(out)
redis.call('HSET', KEYS[1], 'tags', #out > 0 and cjson.encode(out) or '[]')
return #out
