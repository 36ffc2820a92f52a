-- Publish one partition's outputs into its outbox, in the partition's hash slot (Redis
-- Cluster; outbox_lib.lua goes in front).
-- KEYS: the partition's outbox stream, its ownership epoch key, its re-publication mark.
-- ARGV: horizon ms, fires kept per customer, the publisher's ownership epoch ('' = not
--       fenced), n outputs, then per output its fields (outbox_lib.lua) and its outbox record
--       (see outbox.py).
-- A publisher that no longer owns the partition publishes nothing: the script answers the
-- error "FENCED". An output seen before does nothing; a new one is noted in the trace of its
-- events, kept among its customer's last fires and added to the outbox, from which outbox.py
-- forwards it to its streams. Returns how many were new.
local outbox, epoch = KEYS[1], KEYS[2]
local horizon, kept, fence, n = ARGV[1], tonumber(ARGV[2]), ARGV[3], tonumber(ARGV[4])
if fence ~= '' and redis.call('GET', epoch) ~= fence then return redis.error_reply('FENCED') end

local part = marks(KEYS[3])
local i, emitted = 5, 0
for _ = 1, n do
  local fresh
  fresh, i = output(part, i, horizon, kept)
  if fresh then
    redis.call('XADD', outbox, '*', 'r', ARGV[i])
    emitted = emitted + 1
  end
  i = i + 1
end
save_mark(part)
return emitted
