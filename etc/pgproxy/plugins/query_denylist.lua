-- pgproxy plugin: refuse statements an operator never wants through the proxy, and tag the rest.
--
--   plugins:
--     - file: /etc/pgproxy/plugins/query_denylist.lua
--       config:
--         deny: ["drop database", "alter system", "copy .* to program"]   # Lua patterns
--         sqlstate: "42501"          # insufficient_privilege (the default here)
--         annotate: true             # put /* user=... client=... */ before every query
--
-- Runs on pooled mappings (on_query sees each Query and Parse). A statement is matched after
-- its comments are removed, its white space collapsed to single spaces and its letters lowered,
-- so "DROP  /**/ DATABASE" is "drop database". A match ends the session with FATAL and the
-- configured SQLSTATE. Counter: denylist_refused.

local patterns = {}
for i, p in ipairs(pgproxy.config.deny or {}) do
  assert(type(p) == "string", "config.deny[" .. i .. "] must be a string")
  assert(pcall(string.find, "", p), "config.deny[" .. i .. "] is not a Lua pattern: " .. p)
  patterns[#patterns + 1] = p
end
local sqlstate = pgproxy.config.sqlstate or "42501"
local annotate = pgproxy.config.annotate == true

local function normalize(sql)
  sql = sql:gsub("%-%-[^\n]*", " ")     -- line comments
  sql = sql:gsub("/%*.-%*/", " ")       -- block comments (not nested ones: those are rare)
  sql = sql:gsub("%s+", " ")
  return sql:lower()
end

function on_query(info, sql)
  if #patterns > 0 then
    local text = normalize(sql)
    for _, p in ipairs(patterns) do
      if text:find(p) then
        pgproxy.counter("denylist_refused", 1)
        pgproxy.log("refused for " .. (info.user or "?") .. " from " .. info.client_ip ..
            ": matches \"" .. p .. "\"")
        return { deny = "pgproxy: this statement is not allowed through the proxy (" .. p .. ")",
                 sqlstate = sqlstate }
      end
    end
  end
  if annotate then
    return { annotate = "user=" .. (info.user or "") .. " client=" .. info.client_ip }
  end
  return nil
end
