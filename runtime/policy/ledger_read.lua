-- the read of a batch of contact decisions, in one call. KEYS, in blocks: the customers'
-- version keys, their ledgers, their opt-outs; the capacity channels' version keys, their send
-- times; each request's decision key (all in the contact policy's slot, {policy}). ARGV[1]
-- customers, ARGV[2] channels, ARGV[3] the ledger's horizon (ms), ARGV[4] the capacity horizon.
-- Returns {versions, ledgers, opt-outs}, {versions, send times with scores}, decisions (false
-- where none). Keys read alike go as one MGET per thousand: a call costs more than a key.
local unpack = unpack
local function mget(first, last, out)
  for from = first, last, 1000 do
    local got = redis.call('MGET', unpack(KEYS, from, math.min(from + 999, last)))
    for j = 1, #got do out[#out + 1] = got[j] end
  end
  return out
end
local customers, channels = tonumber(ARGV[1]), tonumber(ARGV[2])
local ledgers, optouts, sends = {}, {}, {}
for c = customers + 1, 2 * customers do
  ledgers[#ledgers + 1] = redis.call('ZRANGEBYSCORE', KEYS[c], ARGV[3], '+inf')
  optouts[#optouts + 1] = redis.call('SMEMBERS', KEYS[c + customers])
end
local base = 3 * customers
for c = base + channels + 1, base + 2 * channels do
  sends[#sends + 1] = redis.call('ZRANGEBYSCORE', KEYS[c], ARGV[4], '+inf', 'WITHSCORES')
end
local versions = mget(1, customers, {})
local channel_versions = mget(base + 1, base + channels, {})
local decided = mget(base + 2 * channels + 1, #KEYS, {})
return {{versions, ledgers, optouts}, {channel_versions, sends}, decided}
