-- What the outbox's scripts share (outbox.py puts it in front of each): whether an output is
-- new, what a new output leaves behind (its trace notes and its customer's last fires), and the
-- tag action.
-- Per output, ARGV holds from index i: dedupe key, log position ('' unless an atomic
-- re-publication: '<entry id>-<index in the entry>'), trace note, n hit keys, hit keys..., fires
-- key ('' if not a rule fire), fire; then what the script itself needs (see each script).
-- A rule's output was seen before when its dedupe key is set. An atomic re-publication, when its
-- log position is not past the partition's mark (a partition publishes them in log order);
-- before the partition's first mark, when its dedupe key is set (what publishers before the mark
-- wrote).

local function position(text) -- '<ms>-<seq>-<index>' -> three numbers
  local ms, seq, index = string.match(text, '^(%d+)-(%d+)-(%d+)$')
  return {tonumber(ms), tonumber(seq), tonumber(index)}
end

local function after(a, b)
  if a[1] ~= b[1] then return a[1] > b[1] end
  if a[2] ~= b[2] then return a[2] > b[2] end
  return a[3] > b[3]
end

local function marks(republished) -- a partition's re-publication mark, as read and as it moves
  local stored = redis.call('GET', republished)
  return {key = republished, mark = stored and position(stored), newest = nil}
end

local function save_mark(part)
  if part.newest then redis.call('SET', part.key, part.newest) end
end

local function after_output(i) -- the index of what follows the shared fields of the output at ARGV[i]
  return i + 4 + tonumber(ARGV[i + 3]) + 2
end

-- The output whose fields start at ARGV[i] in the partition ``part`` (marks): notes and fires
-- written when it is new. Returns whether it was, and the index of its script's own fields.
local function output(part, i, horizon, kept)
  local key, at, note, hits = ARGV[i], ARGV[i + 1], ARGV[i + 2], tonumber(ARGV[i + 3])
  local fresh
  if at == '' then
    fresh = redis.call('SET', key, '1', 'NX', 'PX', horizon)
  else
    local here = position(at)
    if part.mark then
      fresh = after(here, part.mark)
    else
      fresh = redis.call('EXISTS', key) == 0
    end
    if fresh then part.mark, part.newest = here, at end
  end
  local rest = after_output(i)
  local fires, fire = ARGV[rest - 2], ARGV[rest - 1]
  if fresh then
    for h = i + 4, i + 3 + hits do
      redis.call('RPUSH', ARGV[h], note)
      redis.call('PEXPIRE', ARGV[h], horizon)
    end
    if fires ~= '' then
      if redis.call('LPUSH', fires, fire) > kept then redis.call('LTRIM', fires, 0, kept - 1) end
      redis.call('PEXPIRE', fires, horizon)
    end
  end
  return fresh, rest
end

local function apply_tag(profile, op, tag) -- set or clear one tag in the profile's sorted JSON list
  local raw = redis.call('HGET', profile, 'tags')
  local ok, tags = pcall(cjson.decode, raw or '[]')
  if not ok or type(tags) ~= 'table' then tags = {} end
  local out = {}
  for _, t in ipairs(tags) do if t ~= tag then out[#out + 1] = t end end
  if op == 'set' then out[#out + 1] = tag end
  table.sort(out)
  redis.call('HSET', profile, 'tags', #out > 0 and cjson.encode(out) or '[]')
  return #out
end
