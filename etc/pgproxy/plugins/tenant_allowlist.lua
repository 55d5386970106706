-- pgproxy plugin: per-tenant client address allow-lists, read from a file.
--
--   plugins:
--     - file: /etc/pgproxy/plugins/tenant_allowlist.lua
--       config:
--         file: /etc/pgproxy/tenants.allow   # one tenant per line: NAME CIDR [CIDR ...]
--         default: deny                      # tenants without a line: deny (default) or allow
--
-- NAME is a mapping's external name (the TLS server name the tenant's clients use), lower case;
-- '#' starts a comment. The file is read when the plugin loads (at start and on every reload:
-- edit it, then `pgproxy -s reload`); a malformed line fails the load, so the reload is refused
-- and the old lists stay in force. Counters: allowlist_allowed, allowlist_denied.

local allow = {}
local text = pgproxy.read_file(assert(pgproxy.config.file, "config.file is required"))
local n = 0
for raw in text:gmatch("[^\n]+") do
  n = n + 1
  local line = raw:gsub("#.*", "")
  local name, rest = line:match("^%s*(%S+)%s*(.*)$")
  if name then
    local list = allow[name:lower()] or {}
    for cidr in rest:gmatch("%S+") do
      -- pgproxy.ip_in raises on a malformed network: the file's error, with its line.
      local ok, err = pcall(pgproxy.ip_in, "127.0.0.1", cidr)
      if not ok then
        error(pgproxy.config.file .. ":" .. n .. ": " .. err)
      end
      list[#list + 1] = cidr
    end
    allow[name:lower()] = list
  end
end
local default_allow = pgproxy.config.default == "allow"

function on_connect(info)
  local list = allow[info.mapping]
  if list == nil then
    if default_allow then
      return nil
    end
    pgproxy.counter("allowlist_denied", 1)
    return { deny = "pgproxy: no client is allowed for \"" .. info.mapping .. "\"" }
  end
  for _, cidr in ipairs(list) do
    if pgproxy.ip_in(info.client_ip, cidr) then
      pgproxy.counter("allowlist_allowed", 1)
      return nil
    end
  end
  pgproxy.counter("allowlist_denied", 1)
  return {
    deny = "pgproxy: connections from " .. info.client_ip .. " are not on the allow-list of \"" ..
        info.mapping .. "\"",
    sqlstate = "28000",
  }
end
