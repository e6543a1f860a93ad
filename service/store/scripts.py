"""The Lua scripts. Each validates everything before its first write (Lua has no rollback)
and names every key in KEYS (one slot, so Redis Cluster accepts it).
"""

# Commit one decision: compare-and-set on the record's version, with its timers, outbox
# entries and unique claims (tx_id, webhook event ids) in the same atomic step.
#
# KEYS: 1 record hash, 2 timer set, 3 outbox stream, 4.. claim/release/companion keys
# ARGV: expected version ("0": the record must not exist), new version, record ttl ms ("0": no
#       expiry), then counted groups: n (field value)*, n field*, n (score member)*, n member*,
#       n payload*, n (key-index value ttl-ms)*, n (key-index value)*,
#       n (key-index value)* keys that live as long as the record (value "": only their expiry),
#       n (key-index field delta ttl-ms)* counters (a hash field that falls to 0 is deleted),
#       then the optional companion: 0 | 1 key-index expected new n (field value)* n field*,
#       and last the commit's token, kept in the record's `_c` field: the same call sent again
#       (its answer lost on a broken connection) finds itself applied and answers ok.
# The linked keys take the record's expiry on every commit, so they live exactly as long as it.
# (The audit trail is fields of the record itself: see store.plan.)
# The companion is a second hash in the same slot (an mOTP user beside its verification),
# compare-and-set on its own version: both change in one step, or neither. A companion whose
# new version equals the expected one is only checked, not written.
# Returns one of {"ok"}, {"version", current, record fields}, {"version", current, "companion"}
# and {"taken", key-index}.
COMMIT = """
local current = redis.call('HGET', KEYS[1], 'version') or '0'
if current ~= ARGV[1] then
  -- This very commit, sent again after its answer was lost: it is done, not a lost race.
  if current == ARGV[2] and redis.call('HGET', KEYS[1], '_c') == ARGV[#ARGV] then return {'ok'} end
  -- A lost race: the current record comes back, so the step is decided again without a read.
  return {'version', current, redis.call('HGETALL', KEYS[1])}
end

local i = 4
local function group(width)
  local n = tonumber(ARGV[i])
  local first = i + 1
  i = i + 1 + n * width
  return first, n
end
local set_at, n_set = group(2)
local del_at, n_del = group(1)
local zadd_at, n_zadd = group(2)
local zrem_at, n_zrem = group(1)
local xadd_at, n_xadd = group(1)
local claim_at, n_claim = group(3)
local release_at, n_release = group(2)
local link_at, n_link = group(2)
local count_at, n_count = group(4)

local companion, companion_new, cset_at, n_cset, cdel_at, n_cdel
if tonumber(ARGV[i] or '0') == 1 then
  companion = KEYS[tonumber(ARGV[i + 1])]
  local expected = ARGV[i + 2]
  companion_new = ARGV[i + 3]
  local held = redis.call('HGET', companion, 'version') or '0'
  if held ~= expected then return {'version', held, 'companion'} end
  if companion_new == expected then companion = nil end
  i = i + 4
  cset_at, n_cset = group(2)
  cdel_at, n_cdel = group(1)
end

for c = 0, n_claim - 1 do
  local at = claim_at + c * 3
  local key = KEYS[tonumber(ARGV[at])]
  local held = redis.call('GET', key)
  if held and held ~= ARGV[at + 1] then return {'taken', ARGV[at]} end
end

local fields = {'version', ARGV[2], '_c', ARGV[#ARGV]}
for f = 0, n_set - 1 do
  fields[#fields + 1] = ARGV[set_at + f * 2]
  fields[#fields + 1] = ARGV[set_at + f * 2 + 1]
end
redis.call('HSET', KEYS[1], unpack(fields))
if n_del > 0 then redis.call('HDEL', KEYS[1], unpack(ARGV, del_at, del_at + n_del - 1)) end
local function follow(key)
  if ARGV[3] == '0' then redis.call('PERSIST', key) else redis.call('PEXPIRE', key, ARGV[3]) end
end
follow(KEYS[1])
for l = 0, n_link - 1 do
  local key = KEYS[tonumber(ARGV[link_at + l * 2])]
  local value = ARGV[link_at + l * 2 + 1]
  if value ~= '' then redis.call('SET', key, value) end
  follow(key)
end
for c = 0, n_count - 1 do
  local at = count_at + c * 4
  local key = KEYS[tonumber(ARGV[at])]
  if tonumber(redis.call('HINCRBY', key, ARGV[at + 1], ARGV[at + 2])) <= 0 then
    redis.call('HDEL', key, ARGV[at + 1])
  end
  if ARGV[at + 3] ~= '0' then redis.call('PEXPIRE', key, ARGV[at + 3]) end
end
if n_zadd > 0 then redis.call('ZADD', KEYS[2], unpack(ARGV, zadd_at, zadd_at + n_zadd * 2 - 1)) end
if n_zrem > 0 then redis.call('ZREM', KEYS[2], unpack(ARGV, zrem_at, zrem_at + n_zrem - 1)) end
for x = 0, n_xadd - 1 do redis.call('XADD', KEYS[3], '*', 'e', ARGV[xadd_at + x]) end
for c = 0, n_claim - 1 do
  local at = claim_at + c * 3
  redis.call('SET', KEYS[tonumber(ARGV[at])], ARGV[at + 1], 'PX', ARGV[at + 2])
end
-- A claim is released only by its holder: after a claim's own expiry another may hold it.
for r = 0, n_release - 1 do
  local key = KEYS[tonumber(ARGV[release_at + r * 2])]
  if redis.call('GET', key) == ARGV[release_at + r * 2 + 1] then redis.call('DEL', key) end
end
if companion then
  local cfields = {'version', companion_new}
  for f = 0, n_cset - 1 do
    cfields[#cfields + 1] = ARGV[cset_at + f * 2]
    cfields[#cfields + 1] = ARGV[cset_at + f * 2 + 1]
  end
  redis.call('HSET', companion, unpack(cfields))
  if n_cdel > 0 then redis.call('HDEL', companion, unpack(ARGV, cdel_at, cdel_at + n_cdel - 1)) end
end
return {'ok'}
"""

# Claim due timers: push each one's score to now + lease before handing it out, so a worker
# that dies holding it lets the timer come due again (at-least-once; firing is idempotent).
# KEYS: 1 timer set. ARGV: now ms, lease ms, batch size. Returns the claimed members.
CLAIM_TIMERS = """
local due = redis.call('ZRANGEBYSCORE', KEYS[1], '-inf', ARGV[1], 'LIMIT', 0, tonumber(ARGV[3]))
if #due == 0 then return due end
local lease_until = tonumber(ARGV[1]) + tonumber(ARGV[2])
local args = {}
for _, member in ipairs(due) do
  args[#args + 1] = lease_until
  args[#args + 1] = member
end
redis.call('ZADD', KEYS[1], 'XX', unpack(args))
return due
"""

# Release a claim held outside a verification's slot, only if `value` still holds it.
# KEYS: 1 claim. ARGV: holder value. Returns 1 when released.
RELEASE_CLAIM = """
if redis.call('GET', KEYS[1]) == ARGV[1] then return redis.call('DEL', KEYS[1]) end
return 0
"""
