-- header: horizon ms, stream maxlen, n outputs, fires kept per customer,
--         epochs hash, n fences, then per fence: partition, the publisher's ownership epoch
-- per output: dedupe key, payload, n streams, streams..., trace note, n hit keys, hit keys...,
--             profile key, tag op ('' | set | clear), tag, fires key ('' if not a rule fire), fire
-- A publisher that no longer owns one of its fenced partitions publishes nothing: the script
-- answers the error "FENCED <partition>,<partition>...".
local horizon, maxlen, n, kept = ARGV[1], ARGV[2], tonumber(ARGV[3]), tonumber(ARGV[4])
local epochs, fences = ARGV[5], tonumber(ARGV[6])
local stale = {}
for f = 0, fences - 1 do
  local partition, epoch = ARGV[7 + 2 * f], ARGV[8 + 2 * f]
  if redis.call('HGET', epochs, partition) ~= epoch then stale[#stale + 1] = partition end
end
if #stale > 0 then return redis.error_reply('FENCED ' .. table.concat(stale, ',')) end
local i, emitted = 7 + 2 * fences, 0
for k = 1, n do
  local key, payload, streams = ARGV[i], ARGV[i + 1], tonumber(ARGV[i + 2])
  local fresh = redis.call('SET', key, '1', 'NX', 'PX', horizon)
  i = i + 3
  for s = 0, streams - 1 do
    if fresh then redis.call('XADD', ARGV[i + s], 'MAXLEN', '~', maxlen, '*', 'e', payload) end
  end
  i = i + streams
  local note, hits = ARGV[i], tonumber(ARGV[i + 1])
  i = i + 2
  for h = 0, hits - 1 do
    if fresh then
      redis.call('RPUSH', ARGV[i + h], note)
      redis.call('PEXPIRE', ARGV[i + h], horizon)
    end
  end
  i = i + hits
  local profile, op, tag = ARGV[i], ARGV[i + 1], ARGV[i + 2]
  i = i + 3
  if fresh and op ~= '' then
    local raw = redis.call('HGET', profile, 'tags')
    local ok, tags = pcall(cjson.decode, raw or '[]')
    if not ok or type(tags) ~= 'table' then tags = {} end
    local out = {}
    for _, t in ipairs(tags) do if t ~= tag then out[#out + 1] = t end end
    if op == 'set' then out[#out + 1] = tag end
    table.sort(out)
    redis.call('HSET', profile, 'tags', #out > 0 and cjson.encode(out) or '[]')
  end
  local fires, fire = ARGV[i], ARGV[i + 1]
  i = i + 2
  if fresh and fires ~= '' then
    redis.call('LPUSH', fires, fire)
    redis.call('LTRIM', fires, 0, kept - 1)
    redis.call('PEXPIRE', fires, horizon)
  end
  if fresh then emitted = emitted + 1 end
end
return emitted
