-- compare-and-set commit of a batch of contact decisions. KEYS[1]: any key of the contact
-- policy's slot ({policy}), so a cluster routes the script there. ARGV: how many version keys,
-- (version key, expected value) pairs, how many commands, then each as (argc, command...).
local n = tonumber(ARGV[1])
for i = 0, n - 1 do
  local current = redis.call('GET', ARGV[2 + 2 * i]) or '0'
  if current ~= ARGV[3 + 2 * i] then return 0 end
end
local i = 2 + 2 * n
local commands = tonumber(ARGV[i])
i = i + 1
for c = 1, commands do
  local argc = tonumber(ARGV[i])
  redis.call(unpack(ARGV, i + 1, i + argc))
  i = i + 1 + argc
end
for v = 0, n - 1 do redis.call('INCR', ARGV[2 + 2 * v]) end
return 1
