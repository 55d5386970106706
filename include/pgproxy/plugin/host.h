#pragma once

#include <cstdint>
#include <memory>
#include <string>
#include <string_view>
#include <utility>
#include <vector>

#include "pgproxy/base/result.h"
#include "pgproxy/config/config.h"
#include "pgproxy/metrics/metrics.h"

// Lua 5.4 plugins (`plugins:`): policy without forking the code. Each plugin is one Lua state
// per worker (the master builds them with the configuration, the workers inherit them at fork,
// as they do the TLS contexts) that may define the hooks on_connect, on_startup, on_query and
// on_disconnect. A hook runs on the worker's event loop, so it must not block: the states have
// no io, os or package libraries, only string, table, math, utf8 and the `pgproxy` table (log,
// counter, ip_in, config, and read_file while the file loads). Each call has an instruction
// budget and each state a memory cap; a hook that exceeds either, or raises, fails that one
// session (logged, at most once a second per plugin).
typedef struct lua_State lua_State;

namespace pgproxy::plugin {

enum class Hook : std::uint8_t { kConnect, kStartup, kQuery, kDisconnect, kCount };

// What a hook sees of the session (the `info` table).
struct Info {
  std::uint64_t session = 0;
  std::string_view client;     // "address:port"
  std::string_view client_ip;  // "address"
  std::string_view sni, mapping, mode, user, database;
};

// A hook's answer. Plugins run in order; the first deny (or failure) ends the round.
struct Verdict {
  enum class Kind { kAllow, kDeny, kFailed } kind = Kind::kAllow;
  std::string plugin;    // the one that denied or failed
  std::string message;   // deny: for the client; failed: for the log
  std::string sqlstate;  // deny: the plugin's, else 28000
  std::string route;     // on_connect / on_startup: another mapping's external name
  std::vector<std::pair<std::string, std::string>> params;  // on_startup: parameters to set
  std::string annotate;  // on_query: a comment to put before the query
};

// Plugins' shared counters: the table in the metrics region (metrics.h).
class Counters {
 public:
  explicit Counters(metrics::PluginCounter* table) : table_(table) {}
  // Adds `delta` to the counter `name` (claimed on first use) and returns the new value; false
  // when the name is too long or the table is full.
  bool add(std::string_view name, std::int64_t delta, std::int64_t& value);

 private:
  metrics::PluginCounter* table_;
};

class Host {
 public:
  // Loads every plugin of `cfg` (a compile or load error is the configuration's error, with the
  // file named). Null when there are none.
  static base::Result<std::shared_ptr<Host>> build(const config::Config& cfg);
  ~Host();
  Host(const Host&) = delete;
  Host& operator=(const Host&) = delete;

  bool has(Hook h) const { return hooked_[static_cast<std::size_t>(h)]; }
  // Shared counters live in the metrics region, mapped before the workers fork.
  void setCounters(metrics::PluginCounter* table) { counters_ = table; }
  metrics::PluginCounter* counters() const { return counters_; }

  Verdict onConnect(const Info& info);
  Verdict onStartup(const Info& info,
                    const std::vector<std::pair<std::string, std::string>>& params);
  Verdict onQuery(const Info& info, std::string_view sql);
  void onDisconnect(const Info& info, std::string_view outcome, std::uint64_t duration_ms,
                    std::uint64_t bytes_up, std::uint64_t bytes_down);

  struct Plugin;  // one Lua state (host.cc)

 private:
  Host() = default;
  template <typename Push>
  Verdict run(Hook h, const Info& info, Push push_args, int nargs);

  std::vector<std::unique_ptr<Plugin>> plugins_;
  bool hooked_[static_cast<std::size_t>(Hook::kCount)] = {};
  metrics::PluginCounter* counters_ = nullptr;
};

}  // namespace pgproxy::plugin
