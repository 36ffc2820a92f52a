-- Partitions' parts of a request: each partition's part in its own hash slot. On a single
-- Redis one run takes every partition of the request; a Redis Cluster runs it per partition.
-- KEYS: the partitions' log streams.
-- ARGV: the config version the entries record, ttl_s, ids per bucket before a split, first ms
--       of the written key's first day, n keys, o: how many are of the written kind, w: the
--       written key's place among them, then per partition (in KEYS' order): its n keys of
--       remembered ids of the source (the o of the written kind first, then the other kind's,
--       which exist only for a while after a change: runtime/log/partition_log.py's id_keys),
--       the partition, id digests (DIGEST bytes each, concatenated), payload.
-- A key of remembered ids holds a day of arrival, or three under a long horizon. It is a hash
-- {n = buckets, c = ids}; its ids live in buckets '<key>:<index>',
-- hashes 96-bit digest of (source, id) -> its log entry's millisecond (see encode), added one at a
-- time by linear hashing so that every bucket stays small enough for Redis's listpack encoding.
-- Every bucket holds the sentinel field '' from its creation (when it gets its TTL) on, so it is
-- never emptied and re-created without one.
-- In a part of WRITE_CHECKS_FROM ids or more, an id not seen in an older key is written into
-- the written key's bucket by HSETNX, which is also the check against that key: one bucket
-- access per new id, not two. The location it records is the log entry the part will get, the
-- id XADD '*' would give now (next_id, from the stream's last entry: a read that costs about
-- what two checks save). Should the stream be past that id (its newest entry was deleted), XADD
-- takes the next id Redis gives and the part's new ids are pointed at that entry. Smaller parts
-- check the written key with HEXISTS and write after the XADD. A key gets its TTL when its
-- first id arrives, as its buckets do.
-- Returns per partition {log entry id or false, duplicate positions}.
local DIGEST = 12 -- ID_DIGEST_BYTES in partition_log.py
local WRITE_CHECKS_FROM = 4 -- ids in a part from which the written key's check is its HSETNX
local config_version = ARGV[1]
local ttl, load, day_ms = ARGV[2], tonumber(ARGV[3]), tonumber(ARGV[4])
local nkeys, own, written = tonumber(ARGV[5]), tonumber(ARGV[6]), tonumber(ARGV[7])

local function hash32(d)
  local a, b, c, e = string.byte(d, 1, 4)
  return ((a * 256 + b) * 256 + c) * 256 + e
end

local function low_power(n) -- the largest power of two <= n
  local p = 1
  while p * 2 <= n do p = p * 2 end
  return p
end

local function bucket(key_ids, h) -- its name, made once per run and bucket (ids of a run share some)
  local a = h % (key_ids.p * 2)
  if a >= key_ids.n then a = h % key_ids.p end
  local name = key_ids.names[a]
  if not name then
    name = key_ids.prefix .. a
    key_ids.names[a] = name
  end
  return name
end

local function create(key, args) -- a new bucket: the sentinel, its first ids, its TTL
  args[#args + 1] = ''
  args[#args + 1] = ''
  for start = 1, #args, 4000 do
    redis.call('HSET', key, unpack(args, start, math.min(start + 3999, #args)))
  end
  redis.call('EXPIRE', key, ttl)
end

local function split(current) -- linear hashing: bucket n - p gives the ids of bucket n their own bucket
  local n, p = current.n, current.p
  local src = current.prefix .. (n - p)
  local all = redis.call('HGETALL', src)
  local moved, fields = {}, {}
  for k = 1, #all, 2 do
    if all[k] ~= '' and hash32(all[k]) % (p * 2) == n then
      moved[#moved + 1] = all[k]
      moved[#moved + 1] = all[k + 1]
      fields[#fields + 1] = all[k]
    end
  end
  create(current.prefix .. n, moved)
  for start = 1, #fields, 4000 do
    redis.call('HDEL', src, unpack(fields, start, math.min(start + 3999, #fields)))
  end
  current.n = n + 1
  current.p = low_power(n + 1)
end

local function encode(partition, entry) -- -(ms since day_ms + 1), or 'p/entry' (encode_location)
  local rel = tonumber(string.match(entry, '^(%d+)-')) - day_ms
  if rel >= 0 and rel < 2147483647 then
    return string.format('%.0f', -(rel + 1))
  end
  return partition .. '/' .. entry
end

local now_ms -- Redis's clock, read once per run (TIME): what XADD '*' would take as its time

local function dups_of(seen, n) -- the positions (from 0) of the part's ids seen before
  local dups = {}
  for j = 1, n do
    if seen[j] then dups[#dups + 1] = j - 1 end
  end
  return dups
end

local function next_id(stream) -- Redis's rule for '*': now, or the last entry's time and seq + 1
  if not now_ms then
    local t = redis.call('TIME')
    now_ms = tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)
  end
  local ms, seq = now_ms, 0
  local last = redis.call('XREVRANGE', stream, '+', '-', 'COUNT', 1)[1]
  if last then
    local lms, lseq = string.match(last[1], '^(%d+)-(%d+)$')
    lms, lseq = tonumber(lms), tonumber(lseq)
    if lms >= ms then ms, seq = lms, lseq + 1 end
  end
  return string.format('%.0f-%.0f', ms, seq)
end

local function held_in(key) -- a key of remembered ids, as read: its buckets and ids
  local state = redis.call('HMGET', key, 'n', 'c')
  local n = tonumber(state[1]) or 0
  return {prefix = key .. ':', key = key, n = n, p = low_power(math.max(n, 1)), c = tonumber(state[2]) or 0, names = {}}
end

local function append(stream, at) -- one partition's part, its arguments from ARGV[at] on
  local held = {}
  for d = 1, own do held[d] = held_in(ARGV[at + d - 1]) end
  -- the other kind's keys, one call for all while none exists (the common case)
  if nkeys > own and redis.call('EXISTS', unpack(ARGV, at + own, at + nkeys - 1)) > 0 then
    for d = own + 1, nkeys do held[d] = held_in(ARGV[at + d - 1]) end
  end
  local current = held[written]
  local new_key = current.n == 0
  local i = at + nkeys
  local partition, digests, payload = tonumber(ARGV[i]), ARGV[i + 1], ARGV[i + 2]
  local n = #digests / DIGEST
  local ids, hashes, seen = {}, {}, {}
  for j = 1, n do
    ids[j] = string.sub(digests, (j - 1) * DIGEST + 1, j * DIGEST)
    hashes[j] = hash32(ids[j])
  end
  -- the written key is looked at last, and by the write itself when the part has many ids (see the top)
  local by_write = n >= WRITE_CHECKS_FROM
  local function check(key_ids)
    if key_ids.n > 0 then
      for j = 1, n do
        if not seen[j] and redis.call('HEXISTS', bucket(key_ids, hashes[j]), ids[j]) == 1 then seen[j] = true end
      end
    end
  end
  for d = nkeys, 1, -1 do
    if d ~= written and held[d] then check(held[d]) end
  end
  if not by_write then check(current) end
  local candidates = {}
  for j = 1, n do
    if not seen[j] then candidates[#candidates + 1] = j end
  end
  if #candidates == 0 then
    return {false, dups_of(seen, n)}
  end
  if current.n == 0 then
    create(current.prefix .. 0, {})
    current.n, current.p = 1, 1
  end
  -- split first, for every id that may be new, so no bucket outgrows the listpack
  while current.c + #candidates > current.n * load do split(current) end
  local id, fresh = false, candidates
  if by_write then
    id, fresh = next_id(stream), {}
    local where = encode(partition, id)
    for _, j in ipairs(candidates) do
      if redis.call('HSETNX', bucket(current, hashes[j]), ids[j], where) == 1 then fresh[#fresh + 1] = j else seen[j] = true end
    end
  end
  local dups = dups_of(seen, n)
  if #fresh > 0 then
    local fields = {'b', payload, 'd', table.concat(dups, ','), 'v', config_version}
    local added = id and redis.pcall('XADD', stream, id, unpack(fields))
    if not added or added.err then -- no guess, or the stream is past it (its newest entry deleted)
      id = redis.call('XADD', stream, '*', unpack(fields))
      local where = encode(partition, id)
      for _, j in ipairs(fresh) do
        redis.call('HSET', bucket(current, hashes[j]), ids[j], where)
      end
    end
    current.c = current.c + #fresh
  else
    id = false
  end
  redis.call('HSET', current.key, 'n', current.n, 'c', current.c)
  if new_key then redis.call('EXPIRE', current.key, ttl) end -- as its buckets: from its first id on
  return {id, dups}
end

local results = {}
for k = 1, #KEYS do
  results[k] = append(KEYS[k], 8 + (k - 1) * (nkeys + 3))
end
return results
