#include "pgproxy/plugin/host.h"

#include <arpa/inet.h>
#include <fcntl.h>
#include <netinet/in.h>
#include <sys/stat.h>
#include <unistd.h>

#include <cerrno>
#include <cstdio>
#include <cstdlib>
#include <cstring>

extern "C" {
#include <lauxlib.h>
#include <lua.h>
#include <lualib.h>
}

#include "pgproxy/base/clock.h"
#include "pgproxy/base/text.h"
#include "pgproxy/log/log.h"
#include "pgproxy/net/cidr.h"
#include "pgproxy/plugin/query_gate.h"

namespace pgproxy::plugin {

constexpr const char* kHookNames[] = {"on_connect", "on_startup", "on_query", "on_disconnect"};
static_assert(sizeof(kHookNames) / sizeof(kHookNames[0]) == static_cast<std::size_t>(Hook::kCount));

// A file read with pgproxy.read_file while a plugin loads: at most this much.
constexpr std::size_t kMaxReadFile = 16 * 1024 * 1024;

struct Host::Plugin {
  std::string name;  // the file's base name, for logs and refusals
  std::string file;
  lua_State* L = nullptr;
  std::size_t used = 0;   // bytes the state holds
  std::size_t limit = 0;  // max_memory
  int max_instructions = 0;
  int refs[static_cast<std::size_t>(Hook::kCount)] = {LUA_NOREF, LUA_NOREF, LUA_NOREF, LUA_NOREF};
  bool loading = false;  // pgproxy.read_file is allowed only now
  Host* host = nullptr;
  std::uint64_t failure_window_ms = 0;  // failures are logged at most 10 a second
  unsigned failures_logged = 0;
  std::uint64_t failures_unlogged = 0;

  ~Plugin() {
    if (L) {
      lua_close(L);
    }
  }
};

namespace {

using Plugin = Host::Plugin;

// The state's allocator: the memory cap. Lua raises "not enough memory" when it returns null,
// which fails the call that asked, not the process.
void* capAlloc(void* ud, void* ptr, std::size_t osize, std::size_t nsize) {
  auto* p = static_cast<Plugin*>(ud);
  std::size_t old = ptr ? osize : 0;  // without ptr, osize names a type, not a size
  if (nsize == 0) {
    std::free(ptr);
    p->used -= old;
    return nullptr;
  }
  if (nsize > old && p->used + (nsize - old) > p->limit) {
    return nullptr;
  }
  void* out = std::realloc(ptr, nsize);
  if (out) {
    p->used = p->used - old + nsize;
  }
  return out;
}

Plugin* self(lua_State* L) {
  return static_cast<Plugin*>(lua_touserdata(L, lua_upvalueindex(1)));
}

void budgetHook(lua_State* L, lua_Debug*) {
  luaL_error(L, "instruction budget (max_instructions) exceeded");
}

// pgproxy.log(message)
int apiLog(lua_State* L) {
  Plugin* p = self(L);
  std::size_t len = 0;
  const char* msg = luaL_tolstring(L, 1, &len);
  LOG_INFO("plugin %s: %.*s", p->name.c_str(), static_cast<int>(std::min<std::size_t>(len, 2000)),
           msg);
  return 0;
}

// pgproxy.counter(name [, delta]) → the value after adding delta (default 0); nil when the name
// is longer than 59 bytes or all kMaxPluginCounters are named.
int apiCounter(lua_State* L) {
  Plugin* p = self(L);
  std::size_t len = 0;
  const char* name = luaL_checklstring(L, 1, &len);
  lua_Integer delta = luaL_optinteger(L, 2, 0);
  if (!p->host || !p->host->counters()) {
    return luaL_error(L, "pgproxy.counter is not available while the plugin loads");
  }
  std::int64_t value = 0;
  if (!Counters(p->host->counters()).add(std::string_view(name, len), delta, value)) {
    lua_pushnil(L);  // a name over 59 bytes, or all counters named: a plugin goes on without
    return 1;
  }
  lua_pushinteger(L, value);
  return 1;
}

// pgproxy.ip_in(ip, cidr) → whether the address is in the network ("10.0.0.0/8", "::1/128",
// or a single address).
int apiIpIn(lua_State* L) {
  const char* ip = luaL_checkstring(L, 1);
  const char* cidr = luaL_checkstring(L, 2);
  auto net = net::Cidr::parse(cidr);
  if (!net) {
    return luaL_error(L, "pgproxy.ip_in: \"%s\" is not an address or CIDR", cidr);
  }
  sockaddr_storage ss{};
  auto* v4 = reinterpret_cast<sockaddr_in*>(&ss);
  auto* v6 = reinterpret_cast<sockaddr_in6*>(&ss);
  if (inet_pton(AF_INET, ip, &v4->sin_addr) == 1) {
    v4->sin_family = AF_INET;
  } else if (inet_pton(AF_INET6, ip, &v6->sin6_addr) == 1) {
    v6->sin6_family = AF_INET6;
  } else {
    lua_pushboolean(L, 0);  // not an address (a Unix socket's client): in no network
    return 1;
  }
  lua_pushboolean(L, net->contains(reinterpret_cast<const sockaddr*>(&ss)) ? 1 : 0);
  return 1;
}

// pgproxy.read_file(path) → its contents; only while the plugin loads (in the master), never
// from a hook, which would block a worker's event loop.
int apiReadFile(lua_State* L) {
  Plugin* p = self(L);
  const char* path = luaL_checkstring(L, 1);
  if (!p->loading) {
    return luaL_error(L, "pgproxy.read_file may only be called while the plugin loads");
  }
  // Lua raises errors with longjmp: nothing with a destructor may be alive when it does.
  char why[256] = "";
  {
    int fd = open(path, O_RDONLY | O_CLOEXEC);
    if (fd < 0) {
      std::snprintf(why, sizeof(why), "%s", base::errnoText(errno).c_str());
    } else {
      luaL_Buffer b;
      luaL_buffinit(L, &b);
      std::size_t total = 0;
      char chunk[65536];
      for (ssize_t n; (n = read(fd, chunk, sizeof(chunk))) > 0;) {
        total += static_cast<std::size_t>(n);
        if (total > kMaxReadFile) {
          std::snprintf(why, sizeof(why), "larger than 16 MiB");
          break;
        }
        luaL_addlstring(&b, chunk, static_cast<std::size_t>(n));
      }
      close(fd);
      if (why[0] == '\0') {
        luaL_pushresult(&b);
        return 1;
      }
    }
  }
  return luaL_error(L, "pgproxy.read_file(\"%s\"): %s", path, why);
}

void pushValue(lua_State* L, const config::PluginValue& v) {
  using Kind = config::PluginValue::Kind;
  switch (v.kind) {
    case Kind::kString:
      lua_pushlstring(L, v.text.data(), v.text.size());
      return;
    case Kind::kBool:
      lua_pushboolean(L, v.text == "true");
      return;
    case Kind::kNumber:
      if (lua_stringtonumber(L, v.text.c_str()) == 0) {
        lua_pushlstring(L, v.text.data(), v.text.size());
      }
      return;
    case Kind::kList:
    case Kind::kMap:
      lua_createtable(L, v.kind == Kind::kList ? static_cast<int>(v.values.size()) : 0,
                      v.kind == Kind::kMap ? static_cast<int>(v.values.size()) : 0);
      for (std::size_t i = 0; i < v.values.size(); ++i) {
        pushValue(L, v.values[i]);
        if (v.kind == Kind::kList) {
          lua_rawseti(L, -2, static_cast<lua_Integer>(i + 1));
        } else {
          lua_setfield(L, -2, v.keys[i].c_str());
        }
      }
      return;
  }
}

// Only what cannot block or reach outside the state: no io, os, package, debug; no dofile or
// loadfile (files). No coroutine either: the instruction budget is counted per Lua thread, so a
// hook could run a budget's worth in each of many coroutines.
void openSafeLibraries(lua_State* L) {
  const luaL_Reg libs[] = {{LUA_GNAME, luaopen_base},
                           {LUA_TABLIBNAME, luaopen_table},
                           {LUA_STRLIBNAME, luaopen_string},
                           {LUA_MATHLIBNAME, luaopen_math},
                           {LUA_UTF8LIBNAME, luaopen_utf8}};
  for (const auto& lib : libs) {
    luaL_requiref(L, lib.name, lib.func, 1);
    lua_pop(L, 1);
  }
  // load would take precompiled chunks, which Lua does not verify.
  for (const char* name : {"dofile", "loadfile", "load", "require"}) {
    lua_pushnil(L);
    lua_setglobal(L, name);
  }
}

void registerApi(lua_State* L, Plugin* p, const config::PluginConfig& cfg) {
  lua_newtable(L);
  const luaL_Reg api[] = {{"log", apiLog},
                          {"counter", apiCounter},
                          {"ip_in", apiIpIn},
                          {"read_file", apiReadFile},
                          {nullptr, nullptr}};
  lua_pushlightuserdata(L, p);
  luaL_setfuncs(L, api, 1);
  pushValue(L, cfg.config);
  lua_setfield(L, -2, "config");
  lua_setglobal(L, "pgproxy");
}

std::string resolve(const std::string& file, const std::string& config_path) {
  if (!file.empty() && file[0] == '/') {
    return file;
  }
  std::size_t slash = config_path.rfind('/');
  return slash == std::string::npos ? file : config_path.substr(0, slash + 1) + file;
}

std::string baseName(const std::string& path) {
  std::size_t slash = path.rfind('/');
  return slash == std::string::npos ? path : path.substr(slash + 1);
}

void pushInfo(lua_State* L, const Info& info) {
  lua_createtable(L, 0, 8);
  lua_pushinteger(L, static_cast<lua_Integer>(info.session));
  lua_setfield(L, -2, "session");
  auto text = [L](const char* key, std::string_view v) {
    if (!v.empty()) {
      lua_pushlstring(L, v.data(), v.size());
      lua_setfield(L, -2, key);
    }
  };
  text("client", info.client);
  text("client_ip", info.client_ip);
  text("sni", info.sni);
  text("mapping", info.mapping);
  text("mode", info.mode);
  text("user", info.user);
  text("database", info.database);
}

std::string fieldText(lua_State* L, int table, const char* key) {
  lua_getfield(L, table, key);
  std::string out;
  if (lua_type(L, -1) == LUA_TSTRING || lua_type(L, -1) == LUA_TNUMBER) {
    std::size_t len = 0;
    const char* s = lua_tolstring(L, -1, &len);
    out.assign(s, len);
  }
  lua_pop(L, 1);
  return out;
}

// Reads a hook's return value (at the top of the stack) into `v`. nil / true: allow; false:
// deny; a string: deny with it; a table: {deny=, sqlstate=, route=, params=, annotate=}.
void readVerdict(lua_State* L, Plugin& p, Verdict& v) {
  int t = lua_type(L, -1);
  if (t == LUA_TNIL || (t == LUA_TBOOLEAN && lua_toboolean(L, -1))) {
    return;
  }
  if (t == LUA_TBOOLEAN) {
    v.kind = Verdict::Kind::kDeny;
    v.message = "refused by plugin " + p.name;
  } else if (t == LUA_TSTRING) {
    v.kind = Verdict::Kind::kDeny;
    v.message = lua_tostring(L, -1);
  } else if (t == LUA_TTABLE) {
    int top = lua_gettop(L);
    lua_getfield(L, top, "deny");
    bool deny = lua_toboolean(L, -1) != 0;
    lua_pop(L, 1);
    if (deny) {
      v.kind = Verdict::Kind::kDeny;
      v.message = fieldText(L, top, "deny");
      if (v.message.empty()) {
        v.message = "refused by plugin " + p.name;
      }
      v.sqlstate = fieldText(L, top, "sqlstate");
    }
    if (std::string route = fieldText(L, top, "route"); !route.empty()) {
      v.route = route;
      v.plugin = p.name;  // named in the refusal if the mapping does not exist
    }
    if (std::string note = fieldText(L, top, "annotate"); !note.empty()) {
      v.annotate = v.annotate.empty() ? note : v.annotate + " " + note;
    }
    lua_getfield(L, top, "params");
    if (lua_istable(L, -1)) {
      lua_pushnil(L);
      while (lua_next(L, -2) != 0) {
        if (lua_type(L, -2) == LUA_TSTRING &&
            (lua_type(L, -1) == LUA_TSTRING || lua_type(L, -1) == LUA_TNUMBER)) {
          std::size_t kl = 0, vl = 0;
          const char* k = lua_tolstring(L, -2, &kl);
          const char* val = lua_tolstring(L, -1, &vl);
          v.params.emplace_back(std::string(k, kl), std::string(val, vl));
        }
        lua_pop(L, 1);
      }
    }
    lua_pop(L, 1);
  } else {
    v.kind = Verdict::Kind::kFailed;
    v.message = std::string("returned a ") + lua_typename(L, t) +
                " (nil, true, false, a string or a table)";
  }
  if (v.kind == Verdict::Kind::kDeny) {
    v.plugin = p.name;
    // A SQLSTATE is five digits or upper-case letters; anything else is the default.
    bool valid = v.sqlstate.size() == 5;
    for (char c : v.sqlstate) {
      valid = valid && ((c >= '0' && c <= '9') || (c >= 'A' && c <= 'Z'));
    }
    if (!valid) {
      v.sqlstate = "28000";
    }
  }
}

}  // namespace

std::string QueryGate::commentOf(std::string_view note) {
  // PostgreSQL's block comments nest: neither "/*" nor "*/" may appear inside ours.
  std::string out;
  out.reserve(note.size());
  for (char c : note) {
    char prev = out.empty() ? '\0' : out.back();
    if (c == '\0') {
      c = ' ';
    }
    if ((prev == '*' && c == '/') || (prev == '/' && c == '*')) {
      out += ' ';
    }
    out += c;
  }
  return out;
}

bool Counters::add(std::string_view name, std::int64_t delta, std::int64_t& value) {
  if (name.empty() || name.size() >= sizeof(table_[0].name)) {
    return false;
  }
  std::uint64_t h = 1469598103934665603ull;  // FNV-1a: a fixed probe order per name
  for (char c : name) {
    h = (h ^ static_cast<unsigned char>(c)) * 1099511628211ull;
  }
  for (std::size_t i = 0; i < metrics::kMaxPluginCounters; ++i) {
    metrics::PluginCounter& c = table_[(h + i) % metrics::kMaxPluginCounters];
    std::uint32_t state = c.state.load(std::memory_order_acquire);
    if (state == 0) {
      std::uint32_t expected = 0;
      if (c.state.compare_exchange_strong(expected, 1, std::memory_order_acq_rel)) {
        std::memcpy(c.name, name.data(), name.size());
        c.name[name.size()] = '\0';
        c.state.store(2, std::memory_order_release);
        state = 2;
      } else {
        state = expected;
      }
    }
    while (state == 1) {  // another worker is writing the name: a few instructions away
      state = c.state.load(std::memory_order_acquire);
    }
    if (std::string_view(c.name) == name) {
      value = c.value.fetch_add(delta, std::memory_order_relaxed) + delta;
      return true;
    }
  }
  return false;
}

base::Result<std::shared_ptr<Host>> Host::build(const config::Config& cfg) {
  if (cfg.plugins.empty()) {
    return std::shared_ptr<Host>();
  }
  std::shared_ptr<Host> host(new Host());
  for (const auto& pc : cfg.plugins) {
    auto p = std::make_unique<Plugin>();
    p->file = resolve(pc.file, cfg.path);
    p->name = baseName(p->file);
    p->limit = pc.max_memory;
    p->max_instructions = static_cast<int>(pc.max_instructions);
    p->host = host.get();
    p->L = lua_newstate(capAlloc, p.get());
    auto fail = [&](const std::string& why) {
      return base::Error{cfg.path + ":" + std::to_string(pc.mark.line) + ": plugin " + p->file +
                         ": " + why};
    };
    if (!p->L) {
      return fail("cannot create a Lua state");
    }
    openSafeLibraries(p->L);
    registerApi(p->L, p.get(), pc);
    // Loading (top-level code: reading allow-lists, building tables) has the call budget too,
    // times ten: a file that never returns must not hang a reload.
    lua_sethook(p->L, budgetHook, LUA_MASKCOUNT, p->max_instructions * 10);
    p->loading = true;
    int st = luaL_loadfilex(p->L, p->file.c_str(), "t");
    if (st == LUA_OK) {
      st = lua_pcall(p->L, 0, 0, 0);
    }
    p->loading = false;
    if (st != LUA_OK) {
      std::string why = lua_tostring(p->L, -1) ? lua_tostring(p->L, -1) : "error";
      return fail(why);
    }
    bool any = false;
    for (std::size_t h = 0; h < static_cast<std::size_t>(Hook::kCount); ++h) {
      int type = lua_getglobal(p->L, kHookNames[h]);
      if (type == LUA_TFUNCTION) {
        p->refs[h] = luaL_ref(p->L, LUA_REGISTRYINDEX);
        host->hooked_[h] = true;
        any = true;
      } else {
        lua_pop(p->L, 1);
        if (type != LUA_TNIL) {
          return fail(std::string(kHookNames[h]) + " is a " + lua_typename(p->L, type) +
                      ", not a function");
        }
      }
    }
    if (!any) {
      return fail("defines none of on_connect, on_startup, on_query, on_disconnect");
    }
    lua_gc(p->L, LUA_GCCOLLECT);
    host->plugins_.push_back(std::move(p));
  }
  return host;
}

Host::~Host() = default;

template <typename Push>
Verdict Host::run(Hook h, const Info& info, Push push_args, int nargs) {
  Verdict v;
  auto hook = static_cast<std::size_t>(h);
  for (auto& p : plugins_) {
    if (p->refs[hook] == LUA_NOREF) {
      continue;
    }
    lua_State* L = p->L;
    lua_settop(L, 0);
    lua_rawgeti(L, LUA_REGISTRYINDEX, p->refs[hook]);
    pushInfo(L, info);
    push_args(L);
    lua_sethook(L, budgetHook, LUA_MASKCOUNT, p->max_instructions);
    int st = lua_pcall(L, 1 + nargs, 1, 0);
    if (st != LUA_OK) {
      v.kind = Verdict::Kind::kFailed;
      v.plugin = p->name;
      const char* err = lua_tostring(L, -1);
      v.message = std::string(kHookNames[hook]) + ": " +
                  (st == LUA_ERRMEM ? "memory cap (max_memory) reached"
                   : err            ? err
                                    : "error");
    } else {
      readVerdict(L, *p, v);
      if (v.kind == Verdict::Kind::kFailed) {
        v.plugin = p->name;
        v.message = std::string(kHookNames[hook]) + " " + v.message;
      }
    }
    lua_settop(L, 0);
    if (v.kind == Verdict::Kind::kFailed) {
      // Logged at most 10 times a second per plugin, with how many more failed meanwhile.
      std::uint64_t now = base::monotonicMs();
      if (now - p->failure_window_ms >= 1000) {
        p->failure_window_ms = now;
        p->failures_logged = 0;
      }
      if (p->failures_logged < 10) {
        ++p->failures_logged;
        std::string more = p->failures_unlogged == 0
                               ? ""
                               : " (and " + std::to_string(p->failures_unlogged) +
                                     " failures not logged before it)";
        LOG_WARN("plugin %s failed (the session is refused): %s%s", p->name.c_str(),
                 v.message.c_str(), more.c_str());
        p->failures_unlogged = 0;
      } else {
        ++p->failures_unlogged;
      }
      if (st == LUA_ERRMEM) {
        lua_gc(L, LUA_GCCOLLECT);
      }
    }
    if (v.kind != Verdict::Kind::kAllow) {
      return v;
    }
  }
  return v;
}

Verdict Host::onConnect(const Info& info) {
  return run(
      Hook::kConnect, info, [](lua_State*) {}, 0);
}

Verdict Host::onStartup(const Info& info,
                        const std::vector<std::pair<std::string, std::string>>& params) {
  return run(
      Hook::kStartup, info,
      [&params](lua_State* L) {
        lua_createtable(L, 0, static_cast<int>(params.size()));
        for (const auto& [k, val] : params) {
          lua_pushlstring(L, val.data(), val.size());
          lua_setfield(L, -2, k.c_str());
        }
      },
      1);
}

Verdict Host::onQuery(const Info& info, std::string_view sql) {
  return run(
      Hook::kQuery, info, [sql](lua_State* L) { lua_pushlstring(L, sql.data(), sql.size()); }, 1);
}

void Host::onDisconnect(const Info& info, std::string_view outcome, std::uint64_t duration_ms,
                        std::uint64_t bytes_up, std::uint64_t bytes_down) {
  (void)run(
      Hook::kDisconnect, info,
      [&](lua_State* L) {
        lua_createtable(L, 0, 4);
        lua_pushlstring(L, outcome.data(), outcome.size());
        lua_setfield(L, -2, "outcome");
        lua_pushinteger(L, static_cast<lua_Integer>(duration_ms));
        lua_setfield(L, -2, "duration_ms");
        lua_pushinteger(L, static_cast<lua_Integer>(bytes_up));
        lua_setfield(L, -2, "bytes_up");
        lua_pushinteger(L, static_cast<lua_Integer>(bytes_down));
        lua_setfield(L, -2, "bytes_down");
      },
      1);
}

}  // namespace pgproxy::plugin
