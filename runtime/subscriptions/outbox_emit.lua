-- Publish one partition's outputs, in the partition's hash slot.
-- KEYS: the partition's outbox stream, its ownership epoch key.
-- ARGV: horizon ms, fires kept per customer, the publisher's ownership epoch ('' = not
--       fenced), n outputs, then per output: dedupe key, outbox record (fields i, e, s, p, o, t:
--       see outbox.py), trace note, n hit keys, hit keys..., fires key ('' if not a rule fire), fire.
-- A publisher that no longer owns the partition publishes nothing: the script answers the
-- error "FENCED". An output seen before (its dedupe key is set) does nothing; a new one is
-- noted in the trace of its events, kept among its customer's last fires and added to the
-- outbox, from which outbox.py forwards it to its streams.
local outbox, epoch = KEYS[1], KEYS[2]
local horizon, kept, fence, n = ARGV[1], tonumber(ARGV[2]), ARGV[3], tonumber(ARGV[4])
if fence ~= '' and redis.call('GET', epoch) ~= fence then return redis.error_reply('FENCED') end
local i, emitted = 5, 0
for k = 1, n do
  local key, record, note, hits = ARGV[i], ARGV[i + 1], ARGV[i + 2], tonumber(ARGV[i + 3])
  local fresh = redis.call('SET', key, '1', 'NX', 'PX', horizon)
  i = i + 4
  if fresh then
    for h = 0, hits - 1 do
      redis.call('RPUSH', ARGV[i + h], note)
      redis.call('PEXPIRE', ARGV[i + h], horizon)
    end
  end
  i = i + hits
  local fires, fire = ARGV[i], ARGV[i + 1]
  i = i + 2
  if fresh then
    if fires ~= '' then
      redis.call('LPUSH', fires, fire)
      redis.call('LTRIM', fires, 0, kept - 1)
      redis.call('PEXPIRE', fires, horizon)
    end
    redis.call('XADD', outbox, '*', 'r', record)
    emitted = emitted + 1
  end
end
return emitted
