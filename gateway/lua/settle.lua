-- Settle one admitted request (gateway/limits.py, docs/limits.md): release its concurrency leases and correct its
-- token reservations from the estimate to what it really used. Idempotent: a second call finds nothing to undo.
--
-- KEYS[1] tpm:key:<id>   KEYS[2] tpm:key:<id>:total   KEYS[3] tpm:tenant:<slug>   KEYS[4] tpm:tenant:<slug>:total
-- KEYS[5] conc:key:<id>  KEYS[6] conc:tenant:<slug>   KEYS[7] conc:deployment:<id>
-- ARGV: 1 request id, 2 estimated tokens, 3 actual tokens, 4 lease ttl (ms), 5 window (ms),
--       6 budget key prefix ("<prefix>:budget:<tenant>:") or "" when the tenant has no monthly budget

local rid = ARGV[1]
local est = tonumber(ARGV[2])
local actual = tonumber(ARGV[3])
local ttl = tonumber(ARGV[4])
local window = tonumber(ARGV[5])

-- Replace "<rid>:<est>" by "<rid>:<actual>" at the same admission time, so it leaves the window when it would have.
-- An entry already gone has left the window: there is nothing left to correct.
local function correct_window(zkey, tkey)
  local old = rid .. ':' .. est
  local score = redis.call('ZSCORE', zkey, old)
  if not score then return end
  redis.call('ZREM', zkey, old)
  if actual > 0 then redis.call('ZADD', zkey, score, rid .. ':' .. actual) end
  redis.call('INCRBY', tkey, actual - est)
  if redis.call('PTTL', tkey) < 0 then redis.call('PEXPIRE', tkey, window) end
end

-- The deployment lease doubles as the reservation record: its score is admission time + ttl, which names the month
-- the budget was reserved in. Without it (never admitted, already settled, or overran its lease) the budget keeps
-- the estimate: the safe direction, never an undercount.
local lease = redis.call('ZSCORE', KEYS[7], rid)

if actual ~= est then
  correct_window(KEYS[1], KEYS[2])
  correct_window(KEYS[3], KEYS[4])
  if lease and ARGV[6] ~= '' then
    local bkey = ARGV[6] .. yyyymm(tonumber(lease) - ttl)
    if redis.call('EXISTS', bkey) == 1 then redis.call('INCRBY', bkey, actual - est) end
  end
end

redis.call('ZREM', KEYS[5], rid)
redis.call('ZREM', KEYS[6], rid)
if lease then redis.call('ZREM', KEYS[7], rid) end
return lease and 1 or 0
