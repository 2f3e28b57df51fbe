/**
 * Lua scripts of RedisStore. Every key a script touches comes in KEYS[] (redis-keys.ts has the
 * layout), and the keys of one script always share one hash tag, so each runs on one node of a
 * Redis Cluster as well as on one Redis. Scripts read the time with TIME on the node that runs
 * them. Numbers are written with %.0f: Lua's tostring() would print 1.7e+15 for a microsecond
 * fence. What one script cannot do atomically across slots (a group, the deadline index, the
 * idempotency record, the tombstone) redis.ts does in steps, in the order its header explains.
 */

const COMMON = `
local function fmt(n) return string.format('%.0f', n) end
local function now_ms()
  local t = redis.call('TIME')
  return tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)
end
local function to_map(flat)
  local m = {}
  for i = 1, #flat, 2 do m[flat[i]] = flat[i + 1] end
  return m
end
local function late(v) return v ~= nil and v ~= '' and now_ms() > tonumber(v) end
local function append(out, flat)
  for i = 1, #flat do out[#out + 1] = flat[i] end
  return out
end
`;

/**
 * Per-VM scripts: KEYS = [lock, record (the VM's single-VM lease), meta]; ARGV[1] = the VM's lock key.
 * vm_holder: nil, {'single', fields} (a single-VM lease, checked against its record: a lock left
 * behind by a half-ended one is deleted) or {'group', session, leaseId} (the group's record lives
 * in another slot: redis.ts reads it).
 */
const VM = `${COMMON}
local function vm_epoch(candidate)
  local e = redis.call('HGET', KEYS[3], 'epoch')
  if not e and candidate ~= '' then
    redis.call('HSET', KEYS[3], 'epoch', candidate)
    e = candidate
  end
  return e or ''
end
local function vm_holder(vmKey)
  local l = redis.call('HMGET', KEYS[1], 'session', 'leaseId')
  if not l[1] then return nil end
  if l[1] ~= vmKey then return {'group', l[1], l[2]} end
  local h = redis.call('HGETALL', KEYS[2])
  if #h == 0 or to_map(h).leaseId ~= l[2] then
    redis.call('DEL', KEYS[1])
    return nil
  end
  return {'single', h}
end
`;

/**
 * Lock one VM. ARGV: vmKey, epochCandidate, session, keysJSON, owner, ttlMs, hardCapMs, idem,
 * fenceFloor, dataJSON, leaseId, notAfter (this node's clock, ms; '' = none).
 * session == vmKey: a single-VM lease (lock + record, here); otherwise a group member (lock only).
 * Reply: {'ok', fields...} | {'member', fence, epoch} | {'reused', fields...} (this VM's lease of
 * the same owner and idempotency key, live) | {'idem', session, leaseId} (the same, expired)
 * | {'conflict', pending 0/1, fields...} | {'group', session, leaseId} (held by a group member lock)
 * | {'late'} (run after the caller gave up: nothing written).
 */
export const VM_ACQUIRE = `${VM}
if late(ARGV[12]) then return {'late'} end
local vmKey, session, keysJson, owner, idem = ARGV[1], ARGV[3], ARGV[4], ARGV[5], ARGV[8]
local now = now_ms()
local epoch = vm_epoch(ARGV[2])
local h = vm_holder(vmKey)
if h then
  if h[1] == 'group' then return h end
  local f = to_map(h[2])
  if session == vmKey and idem ~= '' and f.owner == owner and f.idem == idem and f.keys == keysJson then
    if tonumber(f.expiresAt) > now then return append({'reused'}, h[2]) end
    return {'idem', f.session, f.leaseId}
  end
  local pending = '0'
  if tonumber(f.expiresAt) <= now then pending = '1' end
  return append({'conflict', pending}, h[2])
end
local last = tonumber(redis.call('HGET', KEYS[3], 'fence') or '0')
local t = redis.call('TIME')
local nowUs = tonumber(t[1]) * 1000000 + tonumber(t[2])
local fence = math.max(last + 1, nowUs, tonumber(ARGV[9]) + 1)
redis.call('HSET', KEYS[3], 'fence', fmt(fence))
redis.call('DEL', KEYS[1])
redis.call('HSET', KEYS[1], 'session', session, 'leaseId', ARGV[11])
if session ~= vmKey then return {'member', fmt(fence), epoch} end
local hard = now + tonumber(ARGV[7])
local exp = math.min(now + tonumber(ARGV[6]), hard)
redis.call('DEL', KEYS[2])
redis.call('HSET', KEYS[2], 'session', session, 'leaseId', ARGV[11], 'owner', owner, 'fence', fmt(fence),
  'createdAt', fmt(now), 'expiresAt', fmt(exp), 'hardDeadline', fmt(hard), 'idem', idem,
  'epoch', epoch, 'keys', keysJson, 'data', ARGV[10], 'state', 'active')
return append({'ok'}, redis.call('HGETALL', KEYS[2]))
`;

/**
 * Who holds a VM. ARGV: vmKey, epochCandidate ('' = do not create the VM's epoch).
 * Reply: {'none', epoch, nowMs} | {'single', epoch, nowMs, fields...} | {'group', epoch, nowMs, session, leaseId}
 */
export const VM_HOLDER = `${VM}
local epoch = vm_epoch(ARGV[2])
local now = fmt(now_ms())
local h = vm_holder(ARGV[1])
if not h then return {'none', epoch, now} end
if h[1] == 'group' then return {'group', epoch, now, h[2], h[3]} end
return append({'single', epoch, now}, h[2])
`;

/**
 * Compare-and-delete on one VM. ARGV: vmKey, leaseId. Deletes the lock and the VM's single-VM
 * record where they belong to leaseId. Reply: 1 (lock deleted) + 2 (record deleted).
 */
export const VM_UNLOCK = `${VM}
local n = 0
if redis.call('HGET', KEYS[1], 'leaseId') == ARGV[2] then
  redis.call('DEL', KEYS[1])
  n = 1
end
if redis.call('HGET', KEYS[2], 'leaseId') == ARGV[2] then
  redis.call('DEL', KEYS[2])
  n = n + 2
end
return n
`;

/** A lease record (single-VM or group): KEYS = [record]. Reply: {nowMs, fields...} ({nowMs} when none). */
export const RECORD_GET = `${COMMON}
return append({fmt(now_ms())}, redis.call('HGETALL', KEYS[1]))
`;

/**
 * KEYS = [record]. ARGV: leaseId, ttlMs, notAfter. A pending group is not renewable (not-found).
 * Reply: {'ok', capped, fields...} | {reason, fields...} | {'not-found'} | {'late'}
 */
export const RECORD_RENEW = `${COMMON}
if late(ARGV[3]) then return {'late'} end
local h = redis.call('HGETALL', KEYS[1])
if #h == 0 then return {'not-found'} end
local f = to_map(h)
if f.state == 'pending' then return {'not-found'} end
local now = now_ms()
if f.leaseId ~= ARGV[1] then return append({'lease-mismatch'}, h) end
if tonumber(f.expiresAt) <= now then return append({'expired'}, h) end
local want = now + tonumber(ARGV[2])
local capped = '0'
if want > tonumber(f.hardDeadline) then
  want = tonumber(f.hardDeadline)
  capped = '1'
end
redis.call('HSET', KEYS[1], 'expiresAt', fmt(math.max(tonumber(f.expiresAt), want)))
return append({'ok', capped}, redis.call('HGETALL', KEYS[1]))
`;

/** KEYS = [record]. ARGV: leaseId, dataJSON. Reply: 1 | 0 */
export const RECORD_UPDATE = `${COMMON}
local f = redis.call('HMGET', KEYS[1], 'leaseId', 'state')
if f[1] ~= ARGV[1] or f[2] == 'pending' then return 0 end
redis.call('HSET', KEYS[1], 'data', ARGV[2])
return 1
`;

/**
 * A group's key list replaced (members let go: releaseMembers), only if the record is this lease's,
 * active, and its list is still ARGV[2]. KEYS = [record]. ARGV: leaseId, keysJSON as read,
 * keysJSON new. Reply: 1 | 0
 */
export const RECORD_KEYS = `${COMMON}
local f = redis.call('HMGET', KEYS[1], 'leaseId', 'state', 'keys')
if f[1] ~= ARGV[1] or f[2] ~= 'active' or f[3] ~= ARGV[2] then return 0 end
redis.call('HSET', KEYS[1], 'keys', ARGV[3])
return 1
`;

/** Compare-and-delete of a record. KEYS = [record]. ARGV: leaseId. Reply: 1 | 0 */
export const RECORD_DELETE = `${COMMON}
if redis.call('HGET', KEYS[1], 'leaseId') ~= ARGV[1] then return 0 end
redis.call('DEL', KEYS[1])
return 1
`;

/**
 * A group's record, pending, written before any of its VM locks. KEYS = [record]. ARGV: session,
 * leaseId, owner, ttlMs, hardCapMs, idem, keysJSON, dataJSON. Reply: {'ok'} | {'exists', fields...}
 */
export const GROUP_PENDING = `${COMMON}
local h = redis.call('HGETALL', KEYS[1])
if #h > 0 then return append({'exists'}, h) end
local now = now_ms()
local hard = now + tonumber(ARGV[5])
local exp = math.min(now + tonumber(ARGV[4]), hard)
redis.call('HSET', KEYS[1], 'session', ARGV[1], 'leaseId', ARGV[2], 'owner', ARGV[3], 'fence', '0',
  'createdAt', fmt(now), 'expiresAt', fmt(exp), 'hardDeadline', fmt(hard), 'idem', ARGV[6],
  'epoch', '', 'keys', ARGV[7], 'data', ARGV[8], 'state', 'pending')
return {'ok'}
`;

/**
 * A group's record made active once every VM is locked. KEYS = [record]. ARGV: leaseId, fence,
 * epoch, notAfter. Reply: {'ok', fields...} | {'gone'} (not this pending group any more) | {'late'}
 */
export const GROUP_ACTIVATE = `${COMMON}
if late(ARGV[4]) then return {'late'} end
local f = redis.call('HMGET', KEYS[1], 'leaseId', 'state')
if f[1] ~= ARGV[1] or f[2] ~= 'pending' then return {'gone'} end
redis.call('HSET', KEYS[1], 'fence', ARGV[2], 'epoch', ARGV[3], 'state', 'active')
return append({'ok'}, redis.call('HGETALL', KEYS[1]))
`;

/** KEYS = [one index bucket]. ARGV: max score ('now' or '+inf'), limit. Reply: {nowMs, member, score, …} oldest first. */
export const INDEX_RANGE = `${COMMON}
local now = now_ms()
local max = ARGV[1]
if max == 'now' then max = fmt(now) end
return append({fmt(now)}, redis.call('ZRANGEBYSCORE', KEYS[1], '-inf', max, 'WITHSCORES', 'LIMIT', 0, tonumber(ARGV[2])))
`;

/**
 * Every bucket at once, on one Redis (or Sentinel: one server; never on a Cluster, where the
 * buckets are in different slots). KEYS = all index buckets. ARGV: max score ('now' or '+inf'),
 * limit. Reply as INDEX_RANGE's: the `limit` oldest entries over all buckets.
 */
export const INDEX_RANGE_ALL = `${COMMON}
local now = now_ms()
local max = ARGV[1]
if max == 'now' then max = fmt(now) end
local limit = tonumber(ARGV[2])
local all = {}
for i = 1, #KEYS do
  local r = redis.call('ZRANGEBYSCORE', KEYS[i], '-inf', max, 'WITHSCORES', 'LIMIT', 0, limit)
  for j = 1, #r, 2 do all[#all + 1] = {tonumber(r[j + 1]), r[j]} end
end
table.sort(all, function(a, b) return a[1] < b[1] end)
local out = {fmt(now)}
for k = 1, math.min(#all, limit) do
  out[#out + 1] = all[k][2]
  out[#out + 1] = fmt(all[k][1])
end
return out
`;

/** KEYS = [index]. ARGV: member, retryMs. Reply: 1 (it was due: now due again at now + retryMs) | 0 */
export const INDEX_CLAIM = `${COMMON}
local score = redis.call('ZSCORE', KEYS[1], ARGV[1])
if not score then return 0 end
local now = now_ms()
if tonumber(score) > now then return 0 end
redis.call('ZADD', KEYS[1], fmt(now + tonumber(ARGV[2])), ARGV[1])
return 1
`;

/** KEYS = [index]. ARGV: member, graceMs. Removes the member if its score is graceMs in the past. Reply: 1 | 0 */
export const INDEX_PRUNE = `${COMMON}
local score = redis.call('ZSCORE', KEYS[1], ARGV[1])
if not score or tonumber(score) > now_ms() - tonumber(ARGV[2]) then return 0 end
redis.call('ZREM', KEYS[1], ARGV[1])
return 1
`;

/**
 * KEYS = [tombstone]. ARGV: session, endedBy, retentionMs, endedNoLaterThan ('' = now). Written
 * once: a later ending (a late second thaw) does not replace the first. endedAt: now, or
 * endedNoLaterThan when earlier. Reply: 1 | 0
 */
export const TOMBSTONE = `${COMMON}
if redis.call('EXISTS', KEYS[1]) == 1 then return 0 end
local ended = now_ms()
if ARGV[4] ~= '' and tonumber(ARGV[4]) < ended then ended = tonumber(ARGV[4]) end
redis.call('HSET', KEYS[1], 'session', ARGV[1], 'endedAt', fmt(ended), 'endedBy', ARGV[2])
redis.call('PEXPIRE', KEYS[1], ARGV[3])
return 1
`;

/** KEYS = [epoch]. ARGV: epochCandidate. Reply: {epoch, nowMs} */
export const EPOCH = `${COMMON}
local e = redis.call('GET', KEYS[1])
if not e then
  redis.call('SET', KEYS[1], ARGV[1])
  e = ARGV[1]
end
return {e, fmt(now_ms())}
`;

export const ALL_SCRIPTS = [
  VM_ACQUIRE,
  VM_HOLDER,
  VM_UNLOCK,
  RECORD_GET,
  RECORD_RENEW,
  RECORD_UPDATE,
  RECORD_DELETE,
  RECORD_KEYS,
  GROUP_PENDING,
  GROUP_ACTIVATE,
  INDEX_RANGE,
  INDEX_RANGE_ALL,
  INDEX_CLAIM,
  INDEX_PRUNE,
  TOMBSTONE,
  EPOCH,
];
