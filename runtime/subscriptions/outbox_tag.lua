-- A tag action on a customer's profile (outbox_lib.lua goes in front).
-- KEYS: the profile. ARGV: 'set' | 'clear', the tag.
return apply_tag(KEYS[1], ARGV[1], ARGV[2])
