-- Add outputs to one stream, each once: in the stream's hash slot.
-- KEYS: the stream.
-- ARGV: horizon ms, stream maxlen, n, then per output: its forwarded mark for the stream, payload.
-- Returns how many were added (not added before).
local stream, horizon, maxlen, n = KEYS[1], ARGV[1], ARGV[2], tonumber(ARGV[3])
local added = 0
for k = 0, n - 1 do
  if redis.call('SET', ARGV[4 + 2 * k], '1', 'NX', 'PX', horizon) then
    redis.call('XADD', stream, 'MAXLEN', '~', maxlen, '*', 'e', ARGV[5 + 2 * k])
    added = added + 1
  end
end
return added
