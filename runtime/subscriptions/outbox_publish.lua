-- Publish outputs straight to their streams, on a single Redis (outbox_lib.lua goes in front):
-- what emit and forward do in two steps on a Redis Cluster, in one script, so no output waits
-- in an outbox and none needs a forwarding mark.
-- ARGV: horizon ms, fires kept per customer, stream maxlen, n partitions, then per partition:
--       its ownership epoch key, the publisher's epoch ('' = not fenced), its re-publication
--       mark, n outputs, then per output its fields (outbox_lib.lua), n streams, the streams...,
--       payload, and its tag action: the profile key ('' if none), 'set' | 'clear', the tag.
-- The outputs of a partition the publisher no longer owns are not published. Returns
-- {how many outputs were new, the positions (from 1) of the partitions fenced off}.
local horizon, kept, maxlen, np = ARGV[1], tonumber(ARGV[2]), ARGV[3], tonumber(ARGV[4])
local i, emitted, fenced = 5, 0, {}
for p = 1, np do
  local epoch, fence, n = ARGV[i], ARGV[i + 1], tonumber(ARGV[i + 3])
  local part = marks(ARGV[i + 2])
  local owned = fence == '' or redis.call('GET', epoch) == fence
  if not owned then fenced[#fenced + 1] = p end
  i = i + 4
  for _ = 1, n do
    local fresh = false
    if owned then
      fresh, i = output(part, i, horizon, kept)
    else
      i = after_output(i)
    end
    local streams = tonumber(ARGV[i])
    local payload, profile = ARGV[i + streams + 1], ARGV[i + streams + 2]
    if fresh then
      for s = 1, streams do
        redis.call('XADD', ARGV[i + s], 'MAXLEN', '~', maxlen, '*', 'e', payload)
      end
      if profile ~= '' then apply_tag(profile, ARGV[i + streams + 3], ARGV[i + streams + 4]) end
      emitted = emitted + 1
    end
    i = i + streams + 5
  end
  save_mark(part)
end
return {emitted, fenced}
