-- Add outbox records to one stream, each once: in the stream's hash slot.
-- KEYS: the stream, its forwarding marks (a hash: partition -> the newest outbox entry id added).
-- ARGV: horizon ms, stream maxlen, n, then per record: its partition, its outbox entry id, payload.
-- A partition's outbox is forwarded in entry order, so a record is new to the stream exactly
-- when its entry id is above the partition's mark: one mark per (stream, partition) instead of
-- one key per output. Returns how many were added (not added before).
local stream, marks, horizon, maxlen, n = KEYS[1], KEYS[2], ARGV[1], ARGV[2], tonumber(ARGV[3])

local function parse(id)
  local ms, seq = string.match(id, '^(%d+)-(%d+)$')
  return tonumber(ms), tonumber(seq)
end

local newest = {} -- partition -> {ms, seq, id} of its mark, read once
local added = 0
for k = 0, n - 1 do
  local partition, id = ARGV[4 + 3 * k], ARGV[5 + 3 * k]
  local mark = newest[partition]
  if mark == nil then
    local stored = redis.call('HGET', marks, partition)
    if stored then
      local ms, seq = parse(stored)
      mark = {ms, seq, stored}
    else
      mark = {-1, -1, false}
    end
    newest[partition] = mark
  end
  local ms, seq = parse(id)
  if ms > mark[1] or (ms == mark[1] and seq > mark[2]) then
    redis.call('XADD', stream, 'MAXLEN', '~', maxlen, '*', 'e', ARGV[6 + 3 * k])
    mark[1], mark[2], mark[3] = ms, seq, id
    added = added + 1
  end
end
if added > 0 then
  local fields = {}
  for partition, mark in pairs(newest) do
    if mark[3] then
      fields[#fields + 1] = partition
      fields[#fields + 1] = mark[3]
    end
  end
  redis.call('HSET', marks, unpack(fields))
  redis.call('PEXPIRE', marks, horizon)
end
return added
