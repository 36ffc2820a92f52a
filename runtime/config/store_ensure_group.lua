-- create a subscription's (or channel's) stream and consumer group; an existing group stays as it is
local ok, err = pcall(redis.call, 'XGROUP', 'CREATE', KEYS[1], ARGV[1], '$', 'MKSTREAM')
return 1
