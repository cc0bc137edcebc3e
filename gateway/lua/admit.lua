-- Admit one request against every limit, atomically (gateway/limits.py, docs/limits.md).
--
-- KEYS[1] rpm:key:<id>             ZSET request id -> admission time (ms)      sliding window of requests
-- KEYS[2] rpm:tenant:<slug>        same, per tenant
-- KEYS[3] tpm:key:<id>             ZSET "<request id>:<tokens>" -> admission time (ms)
-- KEYS[4] tpm:key:<id>:total       STRING sum of the tokens held in KEYS[3]
-- KEYS[5] tpm:tenant:<slug>        same, per tenant
-- KEYS[6] tpm:tenant:<slug>:total
-- KEYS[7] conc:key:<id>            ZSET request id -> lease expiry (ms)
-- KEYS[8] conc:tenant:<slug>
-- KEYS[9] conc:deployment:<id>     always kept: it is also the deployment's in-flight gauge
-- ARGV: 1 request id, 2 estimated tokens, 3 lease ttl (ms), 4 window (ms),
--       5 rpm key, 6 rpm tenant, 7 tpm key, 8 tpm tenant, 9 conc key, 10 conc tenant, 11 conc deployment,
--       12 monthly budget, 13 budget key prefix ("<prefix>:budget:<tenant>:"), 14 batch capacity (a batch line is
--       admitted only while KEYS[9] holds fewer leases: spare capacity; -1 for any other request);
--       a limit of -1 is unlimited.
--
-- Returns integers only (so the reply does not depend on the client's decode_responses):
-- {fail, scope, limit, used, retry_ms, yyyymm,
--  req_limit, req_remaining, req_reset_ms, tok_limit, tok_remaining, tok_reset_ms}
-- fail: 0 admitted, 1 monthly budget, 2 requests/min, 3 tokens/min, 4 request larger than tokens/min, 5 concurrency,
--       6 no spare capacity for a batch line
-- scope: 0 none, 1 key, 2 tenant, 3 deployment. Absent figures are -1.

local t = redis.call('TIME')
local now = tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)
local rid = ARGV[1]
local est = tonumber(ARGV[2])
local ttl = tonumber(ARGV[3])
local window = tonumber(ARGV[4])
local cutoff = now - window
local lim = {}
for i = 5, 12 do lim[i] = tonumber(ARGV[i]) end
local batch_cap = tonumber(ARGV[14])

-- Entries admitted at or before `cutoff` have left the window: an entry admitted at t counts during [t, t + window).
local function count_requests(zkey)
  redis.call('ZREMRANGEBYSCORE', zkey, '-inf', cutoff)
  return redis.call('ZCARD', zkey)
end

local function tokens_of(member)
  return tonumber(string.match(member, ':(%d+)$'))
end

-- Drops expired token entries and returns the tokens still in the window (kept as a running total).
local function count_tokens(zkey, tkey)
  local old = redis.call('ZRANGEBYSCORE', zkey, '-inf', cutoff)
  if #old > 0 then
    redis.call('ZREMRANGEBYSCORE', zkey, '-inf', cutoff)
    if redis.call('ZCARD', zkey) == 0 then
      redis.call('DEL', tkey)
      return 0
    end
    local freed = 0
    for i = 1, #old do freed = freed + tokens_of(old[i]) end
    return redis.call('DECRBY', tkey, freed)
  end
  return tonumber(redis.call('GET', tkey) or '0')
end

local function count_leases(zkey)
  redis.call('ZREMRANGEBYSCORE', zkey, '-inf', now)
  return redis.call('ZCARD', zkey)
end

-- ms until the oldest entry leaves the window (when capacity next grows); -1 for an empty window.
local function next_free_ms(zkey)
  local first = redis.call('ZRANGE', zkey, 0, 0, 'WITHSCORES')
  if #first == 0 then return -1 end
  return tonumber(first[2]) + window - now
end

-- ms until enough tokens leave the window for `need` more to fit under `limit`. Only run on refusal; it walks at
-- most 256 entries, answering a lower bound past that (Retry-After is advice, the check itself stays exact).
local function tokens_retry_ms(zkey, used, limit, need)
  local entries = redis.call('ZRANGE', zkey, 0, 255, 'WITHSCORES')
  local left = used
  local score = now - window
  for i = 1, #entries, 2 do
    left = left - tokens_of(entries[i])
    score = tonumber(entries[i + 1])
    if left + need <= limit then break end
  end
  return math.max(score + window - now, 1)
end

local function expire_at_least(key, ms)
  if redis.call('PTTL', key) < ms then redis.call('PEXPIRE', key, ms) end
end

-- Phase 1: read every counter (purging what expired). Nothing is recorded until every limit passed.
local rk, rt, tk, tt, ck, ct = 0, 0, 0, 0, 0, 0
if lim[5] >= 0 then rk = count_requests(KEYS[1]) end
if lim[6] >= 0 then rt = count_requests(KEYS[2]) end
if lim[7] >= 0 then tk = count_tokens(KEYS[3], KEYS[4]) end
if lim[8] >= 0 then tt = count_tokens(KEYS[5], KEYS[6]) end
if lim[9] >= 0 then ck = count_leases(KEYS[7]) end
if lim[10] >= 0 then ct = count_leases(KEYS[8]) end
local cd = count_leases(KEYS[9])
local month, bkey, bused = 0, nil, 0
if lim[12] >= 0 then
  month = yyyymm(now)
  bkey = ARGV[13] .. month
  bused = tonumber(redis.call('GET', bkey) or '0')
end

-- Phase 2: the first limit that fails, most final first (a spent budget is not cured by waiting).
local fail, scope, flimit, fused, retry = 0, 0, -1, -1, -1
if lim[12] >= 0 and bused + est > lim[12] then
  fail, scope, flimit, fused = 1, 2, lim[12], bused
elseif lim[5] >= 0 and rk >= lim[5] then
  fail, scope, flimit, fused = 2, 1, lim[5], rk
elseif lim[6] >= 0 and rt >= lim[6] then
  fail, scope, flimit, fused = 2, 2, lim[6], rt
elseif lim[7] >= 0 and est > lim[7] then
  fail, scope, flimit, fused = 4, 1, lim[7], tk
elseif lim[8] >= 0 and est > lim[8] then
  fail, scope, flimit, fused = 4, 2, lim[8], tt
elseif lim[7] >= 0 and tk + est > lim[7] then
  fail, scope, flimit, fused = 3, 1, lim[7], tk
  retry = tokens_retry_ms(KEYS[3], tk, lim[7], est)
elseif lim[8] >= 0 and tt + est > lim[8] then
  fail, scope, flimit, fused = 3, 2, lim[8], tt
  retry = tokens_retry_ms(KEYS[5], tt, lim[8], est)
elseif lim[9] >= 0 and ck >= lim[9] then
  fail, scope, flimit, fused = 5, 1, lim[9], ck
elseif lim[10] >= 0 and ct >= lim[10] then
  fail, scope, flimit, fused = 5, 2, lim[10], ct
elseif lim[11] >= 0 and cd >= lim[11] then
  fail, scope, flimit, fused = 5, 3, lim[11], cd
elseif batch_cap >= 0 and cd >= batch_cap then
  fail, scope, flimit, fused = 6, 3, batch_cap, cd
end
if fail == 2 then
  -- the entry whose expiry brings the count under the limit (the oldest, unless the limit was lowered);
  -- KEYS[1] and KEYS[2] are the key's and the tenant's request windows, as scope 1 and 2 name them
  local e = redis.call('ZRANGE', KEYS[scope], fused - flimit, fused - flimit, 'WITHSCORES')
  if #e == 0 then retry = window else retry = math.max(tonumber(e[2]) + window - now, 1) end
end

-- Phase 3: all passed, record the request everywhere.
if fail == 0 then
  local member = rid .. ':' .. est
  if lim[5] >= 0 then
    redis.call('ZADD', KEYS[1], now, rid); redis.call('PEXPIRE', KEYS[1], window); rk = rk + 1
  end
  if lim[6] >= 0 then
    redis.call('ZADD', KEYS[2], now, rid); redis.call('PEXPIRE', KEYS[2], window); rt = rt + 1
  end
  if lim[7] >= 0 then
    redis.call('ZADD', KEYS[3], now, member); tk = redis.call('INCRBY', KEYS[4], est)
    redis.call('PEXPIRE', KEYS[3], window); redis.call('PEXPIRE', KEYS[4], window)
  end
  if lim[8] >= 0 then
    redis.call('ZADD', KEYS[5], now, member); tt = redis.call('INCRBY', KEYS[6], est)
    redis.call('PEXPIRE', KEYS[5], window); redis.call('PEXPIRE', KEYS[6], window)
  end
  local expiry = now + ttl
  if lim[9] >= 0 then redis.call('ZADD', KEYS[7], expiry, rid); expire_at_least(KEYS[7], ttl) end
  if lim[10] >= 0 then redis.call('ZADD', KEYS[8], expiry, rid); expire_at_least(KEYS[8], ttl) end
  redis.call('ZADD', KEYS[9], expiry, rid); expire_at_least(KEYS[9], ttl)
  if bkey then
    redis.call('INCRBY', bkey, est)
    -- kept 40 days after its last write: long enough to settle across the month boundary and to be read back
    redis.call('EXPIRE', bkey, 3456000)
  end
end

-- Headers: the tighter (least remaining) of key and tenant, for requests and for tokens.
local rl, rr, rs = -1, -1, -1
if lim[5] >= 0 and (lim[6] < 0 or lim[5] - rk <= lim[6] - rt) then
  rl, rr, rs = lim[5], lim[5] - rk, next_free_ms(KEYS[1])
elseif lim[6] >= 0 then
  rl, rr, rs = lim[6], lim[6] - rt, next_free_ms(KEYS[2])
end
local tl, tr, ts = -1, -1, -1
if lim[7] >= 0 and (lim[8] < 0 or lim[7] - tk <= lim[8] - tt) then
  tl, tr, ts = lim[7], lim[7] - tk, next_free_ms(KEYS[3])
elseif lim[8] >= 0 then
  tl, tr, ts = lim[8], lim[8] - tt, next_free_ms(KEYS[5])
end

return {fail, scope, flimit, fused, retry, month, rl, rr, rs, tl, tr, ts}
