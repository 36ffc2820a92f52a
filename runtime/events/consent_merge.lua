local function decode(raw, map)
  for entry in string.gmatch(raw, "[^,]+") do
    local purpose, flag, at = string.match(entry, "^([^:]*):([01]):(-?%d+)$")
    local old = map[purpose]
    local t = tonumber(at)
    if old == nil or t > old[2] or (t == old[2] and flag == "0") then
      map[purpose] = {flag, t, at}
    end
  end
end
for i = 1, #ARGV, 2 do
  local field = ARGV[i]
  local map = {}
  local current = redis.call("HGET", KEYS[1], field)
  if current then decode(current, map) end
  decode(ARGV[i + 1], map)
  local names = {}
  for name in pairs(map) do names[#names + 1] = name end
  table.sort(names)
  local parts = {}
  for _, name in ipairs(names) do
    parts[#parts + 1] = name .. ":" .. map[name][1] .. ":" .. map[name][3]
  end
  redis.call("HSET", KEYS[1], field, table.concat(parts, ","))
end
return #ARGV / 2
