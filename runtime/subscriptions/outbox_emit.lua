-- Publish one partition's outputs, in the partition's hash slot.
-- KEYS: the partition's outbox stream, its ownership epoch key, its re-publication mark.
-- ARGV: horizon ms, fires kept per customer, the publisher's ownership epoch ('' = not
--       fenced), n outputs, then per output: dedupe key, log position ('' unless an atomic
--       re-publication: '<entry id>-<index in the entry>'), outbox record (fields i, e, s, p, o,
--       t: see outbox.py), trace note, n hit keys, hit keys..., fires key ('' if not a rule
--       fire), fire.
-- A publisher that no longer owns the partition publishes nothing: the script answers the
-- error "FENCED". An output seen before does nothing; a new one is noted in the trace of its
-- events, kept among its customer's last fires and added to the outbox, from which outbox.py
-- forwards it to its streams. A rule's output was seen before when its dedupe key is set. An
-- atomic re-publication, when its log position is not past the mark (the partition publishes
-- them in log order); before the partition's first mark, when its dedupe key is set (what
-- publishers before the mark wrote).
local outbox, epoch, republished = KEYS[1], KEYS[2], KEYS[3]
local horizon, kept, fence, n = ARGV[1], tonumber(ARGV[2]), ARGV[3], tonumber(ARGV[4])
if fence ~= '' and redis.call('GET', epoch) ~= fence then return redis.error_reply('FENCED') end

local function position(text) -- '<ms>-<seq>-<index>' -> three numbers
  local ms, seq, index = string.match(text, '^(%d+)-(%d+)-(%d+)$')
  return {tonumber(ms), tonumber(seq), tonumber(index)}
end

local function after(a, b)
  if a[1] ~= b[1] then return a[1] > b[1] end
  if a[2] ~= b[2] then return a[2] > b[2] end
  return a[3] > b[3]
end

local stored = redis.call('GET', republished)
local mark = stored and position(stored)
local newest = nil
local i, emitted = 5, 0
for k = 1, n do
  local key, at, record, note, hits = ARGV[i], ARGV[i + 1], ARGV[i + 2], ARGV[i + 3], tonumber(ARGV[i + 4])
  local fresh
  if at == '' then
    fresh = redis.call('SET', key, '1', 'NX', 'PX', horizon)
  else
    local here = position(at)
    if mark then
      fresh = after(here, mark)
    else
      fresh = redis.call('EXISTS', key) == 0
    end
    if fresh then
      mark, newest = here, at
    end
  end
  i = i + 5
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
if newest then redis.call('SET', republished, newest) end
return emitted
