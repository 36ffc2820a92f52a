-- move the global config version on and record, under the new version, what changed (a rule's
-- record from then on, or its deletion), so a partition actor can rebuild the rules of any version
-- a log entry was stamped with, not only of those it happened to poll.
-- KEYS[1] the global version, KEYS[2] the change log (sorted set, score: the global version);
-- ARGV[1] the change (JSON), ARGV[2] how many changes the log keeps
local version = redis.call('INCR', KEYS[1])
redis.call('ZADD', KEYS[2], version, version .. ' ' .. ARGV[1])
redis.call('ZREMRANGEBYRANK', KEYS[2], 0, -tonumber(ARGV[2]) - 1)
return version
