-- The bookkeeping of the delivery attempts that ended during one round trip: each attempt's note
-- on the trace of its events (capped, expiring; best effort: a key that cannot take it is
-- counted, not fatal), then the acknowledgement of the delivered entries.
-- KEYS: the stream, its chunks hash, then one trace key per event.
-- ARGV: group, notes kept per event, trace horizon (s), n_ack, the n_ack entry ids,
--       n_notes, the n_notes notes, then for each trace key the (1-based) index of its note.
-- Returns {entries acknowledged, trace keys that failed}.
local group, keep, horizon = ARGV[1], tonumber(ARGV[2]), ARGV[3]
local n_ack = tonumber(ARGV[4])
local n_notes = tonumber(ARGV[5 + n_ack])
local notes_at = 6 + n_ack
local index_at = notes_at + n_notes
local failed = 0
for i = 3, #KEYS do
  local note = ARGV[notes_at + tonumber(ARGV[index_at + i - 3]) - 1]
  local ok = pcall(function()
    redis.call('RPUSH', KEYS[i], note)
    redis.call('LTRIM', KEYS[i], -keep, -1)
    redis.call('EXPIRE', KEYS[i], horizon)
  end)
  if not ok then failed = failed + 1 end
end
local acked = 0
for first = 5, 4 + n_ack, 1000 do -- unpack in runs: Lua's stack is bounded
  local last = math.min(first + 999, 4 + n_ack)
  redis.call('HDEL', KEYS[2], unpack(ARGV, first, last))
  acked = acked + redis.call('XACK', KEYS[1], group, unpack(ARGV, first, last))
end
return {acked, failed}
