local RS, US = "\30", "\31"
local max_links = tonumber(ARGV[1])
local function split(s, sep)
  local out, i = {}, 1
  while true do
    local j = string.find(s, sep, i, true)
    if not j then out[#out + 1] = string.sub(s, i) return out end
    out[#out + 1] = string.sub(s, i, j - 1)
    i = j + 1
  end
end
local function apply(map, raw)
  if not string.find(raw, US, 1, true) then
    map[""] = {raw, "", ""}
    return
  end
  for _, rec in ipairs(split(raw, RS)) do
    local p = split(rec, US)
    map[p[2]] = {p[1], p[2], p[3]}
  end
end
local function start(link)
  if link[2] == "" then return -math.huge end
  return tonumber(link[2])
end
for i = 2, #ARGV, 2 do
  local field, incoming = ARGV[i], ARGV[i + 1]
  local map = {}
  local current = redis.call("HGET", KEYS[1], field)
  if current then apply(map, current) end
  apply(map, incoming)
  local links = {}
  for _, link in pairs(map) do links[#links + 1] = link end
  table.sort(links, function(a, b) return start(a) < start(b) end)
  local first = 1
  if #links > max_links then first = #links - max_links + 1 end
  local encoded
  if #links - first == 0 and links[first][2] == "" and links[first][3] == "" then
    encoded = links[first][1]
  else
    local parts = {}
    for j = first, #links do
      parts[#parts + 1] = links[j][1] .. US .. links[j][2] .. US .. links[j][3]
    end
    encoded = table.concat(parts, RS)
  end
  redis.call("HSET", KEYS[1], field, encoded)
end
return (#ARGV - 1) / 2
