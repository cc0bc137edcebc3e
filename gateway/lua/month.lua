-- Shared by admit.lua and settle.lua (gateway/limits.py prepends it): the budget month of a time, so both scripts
-- name the same budget key for a reservation and its settlement.
-- Days since the epoch to a UTC year and month (Howard Hinnant's civil_from_days), as yyyymm.
local function yyyymm(ms)
  local z = math.floor(ms / 86400000) + 719468
  local era = math.floor(z / 146097)
  local doe = z - era * 146097
  local yoe = math.floor((doe - math.floor(doe / 1460) + math.floor(doe / 36524) - math.floor(doe / 146096)) / 365)
  local doy = doe - (365 * yoe + math.floor(yoe / 4) - math.floor(yoe / 100))
  local mp = math.floor((5 * doy + 2) / 153)
  local m = mp < 10 and mp + 3 or mp - 9
  local y = yoe + era * 400
  if m <= 2 then y = y + 1 end
  return y * 100 + m
end
