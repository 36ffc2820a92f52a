-- compare-and-set commit of a batch of contact decisions. KEYS[1]: any key of the contact
-- policy's slot ({policy}), so a cluster routes the script there; every key below carries it.
-- ARGV, in sections (the layout is ledger.py's _commit_args; one compact record per customer,
-- because a command's name, key and options repeated per entry cost more than the entry):
--   n, n version keys, n expected values  -> refused (0) unless each still has its value
--   ledger trim bound (ms), ledger TTL (s), decision TTL (s), log TTL (s), log length
--   customers, each: ledger key, log key, c, c (at, contact) pairs, d, d decision keys, d
--     decisions (a hold too: the next decision of the request overwrites it)
--   commands, each as (argc, command...): capacity and the held set
local unpack = unpack
local CHUNK = 1000
local n = tonumber(ARGV[1])
for first = 2, n + 1, CHUNK do
  local last = math.min(first + CHUNK - 1, n + 1)
  local current = redis.call('MGET', unpack(ARGV, first, last))
  for j = first, last do
    if (current[j - first + 1] or '0') ~= ARGV[j + n] then return 0 end
  end
end
local i = 2 + 2 * n
local trim_before, ledger_ttl, decision_ttl = ARGV[i], ARGV[i + 1], ARGV[i + 2]
local log_ttl, log_last = ARGV[i + 3], tonumber(ARGV[i + 4]) - 1
i = i + 5
local customers = tonumber(ARGV[i])
i = i + 1
for _ = 1, customers do
  local ledger, log = ARGV[i], ARGV[i + 1]
  local c = tonumber(ARGV[i + 2])
  i = i + 3
  if c > 0 then
    for first = i, i + 2 * c - 1, 2 * CHUNK do  -- unpack has a limit: at most CHUNK entries a call
      redis.call('ZADD', ledger, unpack(ARGV, first, math.min(first + 2 * CHUNK, i + 2 * c) - 1))
    end
    redis.call('ZREMRANGEBYSCORE', ledger, '-inf', trim_before)
    redis.call('EXPIRE', ledger, ledger_ttl)
    i = i + 2 * c
  end
  local d = tonumber(ARGV[i])
  i = i + 1
  if d > 0 then
    for j = i, i + d - 1 do redis.call('SET', ARGV[j], ARGV[j + d], 'EX', decision_ttl) end
    local length = 0
    for first = i + d, i + 2 * d - 1, CHUNK do  -- in order: the last decision ends up first
      length = redis.call('LPUSH', log, unpack(ARGV, first, math.min(first + CHUNK, i + 2 * d) - 1))
    end
    if length > log_last + 1 then redis.call('LTRIM', log, 0, log_last) end  -- else a no-op
    redis.call('EXPIRE', log, log_ttl)
    i = i + 2 * d
  end
end
local commands = tonumber(ARGV[i])
i = i + 1
for _ = 1, commands do
  local argc = tonumber(ARGV[i])
  redis.call(unpack(ARGV, i + 1, i + argc))
  i = i + 1 + argc
end
for j = 2, n + 1 do redis.call('INCR', ARGV[j]) end
return 1
