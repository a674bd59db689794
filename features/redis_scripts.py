"""The Lua scripts :class:`features.redis_client.RedisOnline` runs, each one atomic round trip:
the newest-wins write of packed values, and the merge of pushed events into stream views' state."""

from __future__ import annotations

from typing import Final

__all__ = ["PUSH_SCRIPT", "WRITE_SCRIPT"]

# Newest wins, per key, in one round trip. ARGV holds (value, expiry in ms or 0) per key.
# Statuses: 1 written, 0 unchanged (identical bytes), 2 skipped (stored value is newer),
# -1 refused (the stored value is not one of ours: wrong type or foreign format).
# Bytes 9..24 of a value are (event, created) in an order-preserving encoding; they are compared
# byte by byte because Lua's string `<` goes through strcoll, which depends on the server locale.
WRITE_SCRIPT: Final = """
local out = {}
for i, key in ipairs(KEYS) do
  local new = ARGV[2 * i - 1]
  local px = tonumber(ARGV[2 * i])
  local ok, cur = pcall(redis.call, 'GET', key)
  local status = 1
  if not ok then
    status = -1
  elseif cur then
    if #cur < 24 or string.sub(cur, 1, 3) ~= string.sub(new, 1, 3) then
      status = -1
    elseif cur == new then
      status = 0
    elseif string.sub(cur, 5, 8) == string.sub(new, 5, 8) then
      for j = 9, 24 do
        local a, b = string.byte(cur, j), string.byte(new, j)
        if a ~= b then
          if a > b then status = 2 end
          break
        end
      end
    end
  end
  if status == 1 then
    if px > 0 then redis.call('SET', key, new, 'PX', px) else redis.call('SET', key, new) end
  end
  out[i] = status
end
return out
"""

# Window state of stream feature views (features.window_state): per key, a 16-byte header (an
# 8-byte prefix naming the format and the view's columns, then the oldest stored event time, µs
# int64 LE) and fixed-size records (event µs int64 LE, 8-byte event id, values). ARGV: now µs,
# expiry margin ms, then per key its view's horizon µs (longest window), header prefix, record
# size, and its new records. The state keeps the events of the last 1.25 horizons (reads as of
# any instant in the last quarter horizon are exact: a replay's). A push costs time in the new
# events, not in the stored ones: a replay is found with a plain substring search (at a record's
# id position), new records are APPENDed, and the stored events are rewritten only when the
# oldest is a further quarter horizon older than that (state holds at most 1.5 horizons; reads
# filter by window, so the old ones are never counted). Records older than 1.25 horizons are not
# added ("expired"). The key expires when its newest event is 1.25 horizons old (plus the margin).
# Reply per key: added, duplicates, expired; or -1, 0, 0 when the key holds something else
# (another view definition, or a foreign value), which is left untouched.
PUSH_SCRIPT: Final = """
local now, margin = tonumber(ARGV[1]), tonumber(ARGV[2])
local out = {}
local function stored(s, id, first, size)
  local from = first
  while true do
    local p = string.find(s, id, from, true)
    if not p then return false end
    if (p - first) % size == 0 then return true end
    from = p + 1
  end
end
for i, key in ipairs(KEYS) do
  local base = 4 * i - 1
  local horizon, prefix, size = tonumber(ARGV[base]), ARGV[base + 1], tonumber(ARGV[base + 2])
  local new = ARGV[base + 3]
  local quarter = math.floor(horizon / 4)
  local lo = now - horizon - quarter
  local ok, cur = pcall(redis.call, 'GET', key)
  if not ok or (cur and (#cur < 16 or string.sub(cur, 1, 8) ~= prefix or (#cur - 16) % size ~= 0)) then
    out[#out + 1] = -1; out[#out + 1] = 0; out[#out + 1] = 0
  else
    local oldest = cur and struct.unpack('<l', cur, 9) or nil
    local rewrite = cur and oldest <= lo - quarter
    local kept, batch = {}, {}
    local added, dup, old, newest, first_new = 0, 0, 0, nil, nil
    for p = 1, #new, size do
      local e = struct.unpack('<l', new, p)
      local id = string.sub(new, p + 8, p + 15)
      if e <= lo then
        old = old + 1
      elseif batch[id] or (cur and stored(cur, id, 25, size)) then
        dup = dup + 1
      else
        batch[id] = true
        kept[#kept + 1] = string.sub(new, p, p + size - 1)
        added = added + 1
        if not newest or e > newest then newest = e end
        if not first_new or e < first_new then first_new = e end
      end
    end
    if rewrite then
      -- the oldest events left every window a while ago: keep only those still in one
      local body, least, latest = {}, nil, nil
      for p = 17, #cur, size do
        local e = struct.unpack('<l', cur, p)
        if e > lo then
          body[#body + 1] = string.sub(cur, p, p + size - 1)
          if not least or e < least then least = e end
          if not latest or e > latest then latest = e end
        end
      end
      for _, rec in ipairs(kept) do body[#body + 1] = rec end
      if first_new and (not least or first_new < least) then least = first_new end
      if newest and (not latest or newest > latest) then latest = newest end
      if #body == 0 then
        redis.call('DEL', key)
      else
        local px = math.floor((latest + horizon + quarter - now) / 1000) + 1 + margin
        redis.call('SET', key, prefix .. struct.pack('<l', least) .. table.concat(body), 'PX', px)
      end
    elseif added > 0 then
      local px = math.floor((newest + horizon + quarter - now) / 1000) + 1 + margin
      if not cur then
        redis.call('SET', key, prefix .. struct.pack('<l', first_new) .. table.concat(kept), 'PX', px)
      else
        redis.call('APPEND', key, table.concat(kept))
        if first_new < oldest then redis.call('SETRANGE', key, 8, struct.pack('<l', first_new)) end
        if redis.call('PTTL', key) < px then redis.call('PEXPIRE', key, px) end
      end
    end
    out[#out + 1] = added; out[#out + 1] = dup; out[#out + 1] = old
  end
end
return out
"""
