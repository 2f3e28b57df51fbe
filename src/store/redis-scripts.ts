/**
 * Lua scripts of RedisStore. Each runs atomically in Redis, on Redis's own clock (TIME), so that
 * gateway processes with skewed clocks agree on expiry. Key layout under the prefix P:
 *   P..'lock:'..key        hash {session, leaseId}       one per locked VM
 *   P..'session:'..s       hash {leaseId, owner, fence, createdAt, expiresAt, hardDeadline,
 *                                idem, epoch, keys (JSON), data (JSON), session}
 *   P..'deadlines'         zset session → thaw-by time (ms)
 *   P..'fence'             string, last fence handed out
 *   P..'epoch'             string, random id taken when the data set started empty
 *   P..'idem:'..owner..'\n'..key   string session..'\n'..leaseId (expires after the hard cap + 1 h)
 *   P..'ended:'..leaseId   hash {session, endedAt, endedBy}: the tombstone RELEASE writes when a
 *                          lease is ended with a reason (expires after the retention it is given)
 * Key names are built inside the scripts from the prefix (passed in ARGV), which a Redis Cluster
 * would refuse; a single Redis (or Sentinel) is what this store is for.
 * Numbers are written with %.0f: Lua's tostring() would print 1.7e+15 for a microsecond fence.
 */

const COMMON = `
local P = ARGV[1]
local function fmt(n) return string.format('%.0f', n) end
local function now_ms()
  local t = redis.call('TIME')
  return tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)
end
local function ensure_epoch(candidate)
  local e = redis.call('GET', P .. 'epoch')
  if not e then
    redis.call('SET', P .. 'epoch', candidate)
    e = candidate
  end
  return e
end
local function to_map(flat)
  local m = {}
  for i = 1, #flat, 2 do m[flat[i]] = flat[i + 1] end
  return m
end
-- the session that really holds a lock key; a lock left behind by a half-ended session is ignored
local function holder(key)
  local l = redis.call('HMGET', P .. 'lock:' .. key, 'session', 'leaseId')
  if not l[1] then return nil end
  local h = redis.call('HGETALL', P .. 'session:' .. l[1])
  if #h == 0 or to_map(h).leaseId ~= l[2] then
    redis.call('DEL', P .. 'lock:' .. key)
    return nil
  end
  return h
end
`;

/**
 * ARGV: P, epochCandidate, session, keysJSON (sorted), owner, ttlMs, hardCapMs, idem, fenceFloor,
 * dataJSON, leaseId, idemRetentionMs, notAfter (store clock ms; '' = none).
 * Reply: {'ok'|'reused', fields...} | {'conflict', key, pending(0/1), fields...} | {'idem', session, leaseId}
 *      | {'late', nowMs}: Redis ran the script after the caller had given up on it (it was stopped,
 *        or the connection stalled): nothing is written, so nothing the caller was told failed
 *        happens later.
 */
export const ACQUIRE = `${COMMON}
if ARGV[13] and ARGV[13] ~= '' and now_ms() > tonumber(ARGV[13]) then return {'late', fmt(now_ms())} end
local epoch = ensure_epoch(ARGV[2])
local session, keysJson, owner = ARGV[3], ARGV[4], ARGV[5]
local ttl, cap = tonumber(ARGV[6]), tonumber(ARGV[7])
local idem, floor, data, leaseId = ARGV[8], tonumber(ARGV[9]), ARGV[10], ARGV[11]
local idemKeep = tonumber(ARGV[12])
local now = now_ms()
local idemKey = P .. 'idem:' .. owner .. '\\n' .. idem
if idem ~= '' then
  local rec = redis.call('GET', idemKey)
  if rec then
    local s, lid = string.match(rec, '^(.*)\\n([^\\n]*)$')
    local h = redis.call('HGETALL', P .. 'session:' .. s)
    if #h > 0 then
      local f = to_map(h)
      if f.leaseId == lid and f.keys == keysJson and tonumber(f.expiresAt) > now then
        local out = {'reused'}
        for i = 1, #h do out[#out + 1] = h[i] end
        return out
      end
    end
    return {'idem', s, lid}
  end
end
local keys = cjson.decode(keysJson)
for _, k in ipairs(keys) do
  local h = holder(k)
  if h then
    local pending = '0'
    if tonumber(to_map(h).expiresAt) <= now then pending = '1' end
    local out = {'conflict', k, pending}
    for i = 1, #h do out[#out + 1] = h[i] end
    return out
  end
end
local last = tonumber(redis.call('GET', P .. 'fence') or '0')
local t = redis.call('TIME')
local nowUs = tonumber(t[1]) * 1000000 + tonumber(t[2])
local fence = math.max(last + 1, nowUs, floor + 1)
redis.call('SET', P .. 'fence', fmt(fence))
local hard = now + cap
local exp = math.min(now + ttl, hard)
local sk = P .. 'session:' .. session
redis.call('DEL', sk)
redis.call('HSET', sk, 'session', session, 'leaseId', leaseId, 'owner', owner, 'fence', fmt(fence),
  'createdAt', fmt(now), 'expiresAt', fmt(exp), 'hardDeadline', fmt(hard), 'idem', idem,
  'epoch', epoch, 'keys', keysJson, 'data', data)
for _, k in ipairs(keys) do
  redis.call('DEL', P .. 'lock:' .. k)
  redis.call('HSET', P .. 'lock:' .. k, 'session', session, 'leaseId', leaseId)
end
redis.call('ZADD', P .. 'deadlines', fmt(exp), session)
if idem ~= '' then
  redis.call('SET', idemKey, session .. '\\n' .. leaseId, 'PX', fmt(cap + idemKeep))
end
local out = {'ok'}
local h = redis.call('HGETALL', sk)
for i = 1, #h do out[#out + 1] = h[i] end
return out
`;

/**
 * ARGV: P, session, leaseId, ttlMs, notAfter (store clock ms; '' = none).
 * Reply: {'ok', capped, fields...} | {reason, fields...} | {'late', nowMs} (see ACQUIRE)
 */
export const RENEW = `${COMMON}
if ARGV[5] and ARGV[5] ~= '' and now_ms() > tonumber(ARGV[5]) then return {'late', fmt(now_ms())} end
local sk = P .. 'session:' .. ARGV[2]
local h = redis.call('HGETALL', sk)
if #h == 0 then return {'not-found'} end
local f = to_map(h)
local now = now_ms()
local out
if f.leaseId ~= ARGV[3] then
  out = {'lease-mismatch'}
elseif tonumber(f.expiresAt) <= now then
  out = {'expired'}
else
  local want = now + tonumber(ARGV[4])
  local capped = '0'
  if want > tonumber(f.hardDeadline) then
    want = tonumber(f.hardDeadline)
    capped = '1'
  end
  local exp = math.max(tonumber(f.expiresAt), want)
  redis.call('HSET', sk, 'expiresAt', fmt(exp))
  redis.call('ZADD', P .. 'deadlines', fmt(exp), ARGV[2])
  out = {'ok', capped}
  h = redis.call('HGETALL', sk)
end
for i = 1, #h do out[#out + 1] = h[i] end
return out
`;

/**
 * ARGV: P, session, leaseId, endedBy ('' = ended by its holder: no tombstone), retentionMs.
 * Reply: 1 released, 0 not ours. The tombstone is written in the same step as the release.
 */
export const RELEASE = `${COMMON}
local sk = P .. 'session:' .. ARGV[2]
local f = redis.call('HMGET', sk, 'leaseId', 'keys')
if not f[1] or f[1] ~= ARGV[3] then return 0 end
for _, k in ipairs(cjson.decode(f[2])) do
  if redis.call('HGET', P .. 'lock:' .. k, 'leaseId') == ARGV[3] then
    redis.call('DEL', P .. 'lock:' .. k)
  end
end
redis.call('DEL', sk)
redis.call('ZREM', P .. 'deadlines', ARGV[2])
if ARGV[4] ~= '' then
  local ek = P .. 'ended:' .. ARGV[3]
  redis.call('DEL', ek)
  redis.call('HSET', ek, 'session', ARGV[2], 'endedAt', fmt(now_ms()), 'endedBy', ARGV[4])
  redis.call('PEXPIRE', ek, ARGV[5])
end
return 1
`;

/** ARGV: P, key. Reply: fields of the holding session or {}. */
export const GET_BY_KEY = `${COMMON}
return holder(ARGV[2]) or {}
`;

/** ARGV: P, session, leaseId, dataJSON. Reply: 1 | 0 */
export const UPDATE_DATA = `${COMMON}
local sk = P .. 'session:' .. ARGV[2]
if redis.call('HGET', sk, 'leaseId') ~= ARGV[3] then return 0 end
redis.call('HSET', sk, 'data', ARGV[4])
return 1
`;

/**
 * ARGV: P, epochCandidate, key, leaseId, epoch.
 * Reply: {'live'|'expired'|'superseded', fields...} | {'ended'} | {'lost', epoch}
 */
export const CHECK = `${COMMON}
local epoch = ensure_epoch(ARGV[2])
local h = holder(ARGV[3])
local out
if h then
  local f = to_map(h)
  if f.leaseId == ARGV[4] then
    if tonumber(f.expiresAt) > now_ms() then out = {'live'} else out = {'expired'} end
  else
    out = {'superseded'}
  end
  for i = 1, #h do out[#out + 1] = h[i] end
  return out
end
if epoch ~= ARGV[5] then return {'lost', epoch} end
return {'ended'}
`;

/** ARGV: P, max score ('now' or '+inf'), limit. Reply: list of field lists. */
export const LIST_SESSIONS = `${COMMON}
local max = ARGV[2]
if max == 'now' then max = fmt(now_ms()) end
local names = redis.call('ZRANGEBYSCORE', P .. 'deadlines', '-inf', max, 'LIMIT', 0, tonumber(ARGV[3]))
local out = {}
for _, s in ipairs(names) do
  local h = redis.call('HGETALL', P .. 'session:' .. s)
  if #h == 0 then
    redis.call('ZREM', P .. 'deadlines', s)
  else
    out[#out + 1] = h
  end
end
return out
`;

/** ARGV: P, session, leaseId, retryMs. Reply: 1 claimed | 0 */
export const CLAIM = `${COMMON}
local score = redis.call('ZSCORE', P .. 'deadlines', ARGV[2])
if not score then return 0 end
local now = now_ms()
if tonumber(score) > now then return 0 end
local f = redis.call('HMGET', P .. 'session:' .. ARGV[2], 'leaseId', 'expiresAt')
if f[1] ~= ARGV[3] then return 0 end
if tonumber(f[2]) > now then
  redis.call('ZADD', P .. 'deadlines', f[2], ARGV[2])
  return 0
end
redis.call('ZADD', P .. 'deadlines', fmt(now + tonumber(ARGV[4])), ARGV[2])
return 1
`;

/** ARGV: P, epochCandidate. Reply: {epoch, nowMs} */
export const EPOCH = `${COMMON}
return {ensure_epoch(ARGV[2]), fmt(now_ms())}
`;
