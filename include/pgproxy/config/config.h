#pragma once

#include <cstddef>
#include <cstdint>
#include <memory>
#include <optional>
#include <string>
#include <string_view>
#include <vector>

#include "pgproxy/auth/client_auth.h"
#include "pgproxy/auth/user_list.h"
#include "pgproxy/base/result.h"
#include "pgproxy/net/cidr.h"
#include "pgproxy/sql/read_only.h"

namespace pgproxy::config {

// Where in the file a value came from, so every later complaint can point at it.
struct Mark {
  int line = 0;  // 1-based
  int column = 0;
};

struct ListenAddress {
  std::string address;  // IP literal as written ("0.0.0.0", "::1", ...)
  std::uint16_t port = 5400;
  Mark mark;
  // admin.console's entry (appended to `listen` by the loader): every connection on it is the
  // psql console, whatever database it names.
  bool console = false;
  // Connections on it start with a PROXY protocol header (v1 or v2) from a load balancer among
  // `proxy_protocol_from`; the client address it names is the one limits, allow/deny and logs
  // use. Others are closed at accept.
  bool proxy_protocol = false;
  std::vector<net::Cidr> proxy_protocol_from;
  bool operator==(const ListenAddress& o) const { return address == o.address && port == o.port; }
};

// Peers one instance may name: a cancel request this instance cannot place goes to at most 8
// places (its own matches by client address, then every peer), so that a flood of bogus cancels
// cannot become a larger flood of connections.
inline constexpr std::size_t kMaxPeers = 7;

// Another pgproxy instance of the same service (`peers`).
struct Peer {
  unsigned id = 0;
  ListenAddress address;  // its client listener, ADDRESS:PORT
  Mark mark;
};

// passthrough: the client's TLS session goes to the backend untouched (the backend holds the
// certificate). terminate: pgproxy holds the certificate and opens its own session to the backend.
enum class TlsMode { kPassthrough, kTerminate };
// How a passthrough session's bytes move once it is routed: kernel (a BPF sockmap moves them
// between the sockets without waking pgproxy), user (pgproxy's recv/send relay), or auto (kernel
// where the BPF program loaded at start, user otherwise). kInherit: a mapping without its own.
enum class SpliceMode { kInherit, kAuto, kKernel, kUser };
// How a terminated session talks to its backend, named like libpq's sslmode.
enum class BackendTls { kDisable, kRequire, kVerifyCa, kVerifyFull };

// A connection rate: `count` connections per `period_ms`, with bursts of up to `burst`.
// Disabled when count is 0.
struct Rate {
  std::uint32_t count = 0;
  std::uint32_t period_ms = 1000;
  std::uint32_t burst = 0;
  bool enabled() const { return count > 0; }
  bool operator==(const Rate&) const = default;
};

// TCP keepalive on client and backend sockets; a zero field keeps the kernel's setting.
struct KeepAlive {
  bool enabled = true;
  std::uint32_t idle_s = 0;
  std::uint32_t interval_s = 0;
  std::uint32_t count = 0;
};

// One server of a mapping's backend group.
struct Backend {
  std::string host;  // host name or IP literal
  std::uint16_t port = 5432;
  unsigned weight = 1;  // round_robin and random
  Mark mark;
  std::string key() const { return host + ":" + std::to_string(port); }
  // A wildcard mapping's "$1" host: a pattern, not a server (no health, no shared slot).
  bool templated() const { return host.find("$1") != std::string::npos; }
};

// How a session picks among the backends that are not down.
enum class Balance { kRoundRobin, kLeastConn, kRandom, kFirst };

// Active health checks, run by the master's health-check process (off unless configured).
struct HealthCheck {
  bool enabled = false;
  std::uint64_t interval_ms = 2000;
  std::uint64_t timeout_ms = 1000;
  unsigned fall = 3;  // consecutive failures before a backend is down (passive ones count too)
  unsigned rise = 2;  // consecutive successes before it is up again
  // With a user the check logs in and asks pg_is_in_recovery() (needed for `role`).
  std::string user;
  std::string password_file;  // read by the health checker; empty: no password
  std::string database = "postgres";
};

// Which servers of a group may take sessions, as the logged-in health checks see them.
enum class BackendRole { kAny, kPrimary, kStandby };

// A mapping's `pool:` block: pgproxy keeps server connections per (backend, user, database) and
// lends them to its authenticated clients. Caps count over all workers and all generations.
enum class PoolMode { kSession, kTransaction, kStatement };
struct PoolConfig {
  bool enabled = false;  // the mapping has a pool block
  PoolMode mode = PoolMode::kSession;
  unsigned size = 20;         // server connections per (backend, user, database)
  unsigned min_size = 0;      // kept open and warm
  unsigned reserve_size = 0;  // extra, after reserve_timeout of waiting
  std::uint64_t reserve_timeout_ms = 5'000;
  unsigned max_db_connections = 0;                 // per (backend, database); 0: no cap
  std::uint64_t query_wait_timeout_ms = 120'000;   // 0: wait forever
  std::uint64_t server_idle_timeout_ms = 600'000;  // 0: never
  std::uint64_t server_lifetime_ms = 3'600'000;    // 0: never
  std::string server_reset_query = "DISCARD ALL";  // session mode, on release; empty: none
  std::string server_check_query;                  // empty: an empty query
  std::uint64_t server_check_delay_ms = 30'000;    // 0: check before every reuse
  // Named prepared statements kept per server connection in transaction and statement modes;
  // 0: pgproxy does not track them (they pass through, as before PgBouncer 1.21).
  unsigned prepared_statements = 200;
  Mark mark;
};

// A mapping's route: what a client's StartupMessage must say (glob patterns; `*` any run of
// characters, `?` one; empty: anything) for its session to go to the route's backends, in the
// route's role, with the route's database. Terminated and plaintext sessions only: a TLS
// passthrough session's StartupMessage is encrypted for the backend.
struct RouteMatch {
  std::string database, user, application_name;
};
struct Route {
  RouteMatch match;
  std::vector<std::size_t> backends;  // indexes into the mapping's backends; empty: its own
  BackendRole role = BackendRole::kAny;
  bool has_role = false;  // a route's role replaces the mapping's, even with `any`
  std::string database;   // sent to the backend instead of the client's; empty: the client's
  Mark mark;
};

struct Mapping {
  std::string external;  // lower-cased; "*.example.com" for a wildcard
  // The first backend's host (the seed's shorthand for one backend). On a wildcard mapping it may
  // hold "$1", replaced per session by the label the wildcard matched (`templated`).
  std::string internal;
  std::uint16_t port = 5432;
  // Never empty after load: the mapping's own (internal/port make one), then the routes' ones.
  std::vector<Backend> backends;
  std::size_t own_backends = 0;  // the first this many are the mapping's own; 0: routes only
  std::vector<Route> routes;     // first match wins; none: the mapping's own backends
  bool templated = false;        // internal has "$1"
  Balance balance = Balance::kRoundRobin;
  BackendRole role = BackendRole::kAny;
  HealthCheck health;
  net::AccessList access;        // allow/deny for this mapping, after routing
  unsigned max_connections = 0;  // 0: no limit
  Rate connection_rate;          // per client address, for this mapping
  TlsMode tls = TlsMode::kPassthrough;
  std::string certificate;  // chain file; empty: tls.certificate
  std::string key;
  BackendTls backend_tls = BackendTls::kRequire;
  std::string backend_ca;   // empty: the system's trust store
  std::string backend_sni;  // empty: `internal` when it is a host name
  // pgproxy authenticates the clients (the `auth` block) and logs in to the backend for them.
  bool authenticate = false;
  PoolConfig pool;  // pool.enabled implies authenticate
  // read_write_split (a pooled transaction or statement mode mapping whose health checks log
  // in): each transaction the classifier proves read-only goes to a standby of the session's
  // backends, everything else to the primary.
  bool read_write_split = false;
  // read_write_split: optimistic: an explicit transaction started with a plain BEGIN tries a
  // standby, and runs again on the primary when the standby refuses a write (25006) before the
  // client has seen a result.
  bool read_write_optimistic = false;
  // backend_proxy_protocol: v2: every connection to the mapping's backends starts with a PROXY
  // protocol v2 header: the client's addresses for a client's session, LOCAL for pgproxy's own
  // (pools, health checks, auth.query).
  bool backend_proxy_protocol = false;
  std::vector<std::string> read_only_functions;  // as written, for SHOW CONFIG and errors
  std::shared_ptr<const sql::ReadOnlyFunctions> read_only;  // compiled from the list
  std::uint64_t read_after_write_ms = 1000;  // a client's reads stay on the primary after a write
  std::uint64_t max_replica_lag_ms = 0;      // standbys further behind take no reads; 0: off
  Mark mark;
  SpliceMode splice = SpliceMode::kInherit;  // kInherit: the global splice
};

// The global `tls:` block: defaults for terminated sessions.
struct TlsConfig {
  std::string min_version = "1.2";  // "1.2" or "1.3"
  std::string ciphers;              // TLS 1.2 cipher list; empty: OpenSSL's default
  std::string ciphersuites;         // TLS 1.3 suites; empty: OpenSSL's default
  std::string certificate;          // for terminate mappings without their own
  std::string key;
  bool require = false;  // refuse plaintext clients
};

inline constexpr std::uint64_t kDefaultHandshakeTimeoutMs = 10'000;
inline constexpr std::uint64_t kDefaultConnectTimeoutMs = 5'000;
inline constexpr std::uint64_t kDefaultShutdownTimeoutMs = 300'000;
inline constexpr unsigned kDefaultMaxDrainingGenerations = 4;
// The most workers a generation may have: a reload starts the new generation while the previous
// one still serves, and both must fit in the 128 worker slots of shared memory
// (metrics::kMaxSlots, limits::kMaxWorkers; the master checks the two agree).
inline constexpr unsigned kMaxWorkers = 64;

// The admin HTTP listener (metrics, health). Off unless configured.
struct AdminConfig {
  bool enabled = false;
  ListenAddress listen;
  std::string token;  // bearer token required on every request when set (token or token_file)
  // Users allowed on the psql console, the virtual database "pgproxy" on the data listeners;
  // empty: no console (a database of that name is then an ordinary one, routed as any).
  std::vector<std::string> users;
  bool allow_config_write = false;       // PUT /api/v1/config
  std::string certificate, key;          // HTTPS on admin.listen when set
  std::optional<ListenAddress> console;  // a port of its own for the psql console
  bool consoleUser(const std::string& user) const {
    for (const auto& u : users) {
      if (u == user) {
        return true;
      }
    }
    return false;
  }
};

// Client authentication by pgproxy, for mappings with authenticate: true.
struct AuthConfig {
  bool configured = false;
  auth::ClientAuthType type = auth::ClientAuthType::kScramSha256;
  std::string file;  // the auth file; required unless type is trust or cert
  // type cert: the CA file (PEM) client certificates must chain to. The terminated mappings that
  // authenticate request a certificate and verify it against this file (contexts.cc).
  std::string client_ca;
  // Read and checked at load (so -t and a failed reload name a broken line); shared by the
  // workers of the generation.
  std::shared_ptr<const auth::UserList> users;
  // auth_query: secrets of users not in the file, fetched from the backend as `query_user` (whose
  // secret is in the file), trusted for `cache_ms`.
  std::string query;  // empty: off
  std::string query_user;
  std::string query_database = "postgres";
  std::uint64_t cache_ms = 60'000;
  Mark mark;
};

// The `metrics:` block.
struct MetricsConfig {
  unsigned max_pools = 1000;  // pool label sets exported; the rest fold into user="other"
};

enum class LogFormat { kText, kJson };

// A plugin's `config:` as YAML wrote it, for the plugin's Lua table: plain scalars that read as
// numbers or true/false arrive as such, everything else as strings.
struct PluginValue {
  enum class Kind { kString, kNumber, kBool, kList, kMap } kind = Kind::kString;
  std::string text;                 // scalars
  std::vector<std::string> keys;    // kMap: the key of each of `values`
  std::vector<PluginValue> values;  // kList, kMap
};

inline constexpr std::size_t kMaxPlugins = 16;

// One entry of `plugins:` (plugin/host.h).
struct PluginConfig {
  std::string file;  // a Lua 5.4 source file; relative: to the configuration file's directory
  PluginValue config{PluginValue::Kind::kMap, {}, {}, {}};
  unsigned max_instructions = 1'000'000;        // per hook call
  std::uint64_t max_memory = 32 * 1024 * 1024;  // bytes, per plugin and worker
  Mark mark;
};

// Which statements of plaintext and terminated sessions the audit log records.
enum class AuditStatements { kNone, kDdl, kWrite, kAll };

// The `audit:` block: security events as JSON lines, to a file or syslog (audit/).
struct AuditConfig {
  std::string file;                        // "" → not to a file
  std::string syslog;                      // a facility name ("local0"); "" → not to syslog
  std::string syslog_socket = "/dev/log";  // where syslog's datagrams go
  AuditStatements statements = AuditStatements::kNone;
  bool redact_literals = false;  // every literal, not only those after PASSWORD
  bool fail_closed = false;      // refuse new sessions while events cannot be written
  bool enabled() const { return !file.empty() || !syslog.empty(); }
};

// An immutable, validated configuration. Built only by load(); a reload builds a new one.
// Mappings one configuration may have. Each mapping name takes one of the metrics registry's
// fixed slots for the life of the master (metrics::kMaxMappings, one of which is "unknown"), and
// per-mapping max_connections and connection_rate count in that slot: a name without a slot of
// its own would share one with others, so a configuration that cannot fit is refused instead.
inline constexpr std::size_t kMaxMappings = 127;
// Distinct backends (host:port) one configuration may name. Each takes one slot of the shared
// backend table (health, role, least_conn counts) for the life of the master; a configuration
// that cannot fit is refused instead of balancing a backend without that state.
inline constexpr std::size_t kMaxBackends = 512;

struct Config {
  std::string path;
  std::vector<ListenAddress> listen;
  bool debug = false;
  unsigned workers = 0;  // 0 means "auto": one per CPU, at most kMaxWorkers
  std::string pid_file;  // empty: no pid file
  std::string log_file;  // empty: stderr
  std::vector<Mapping> mappings;
  std::optional<std::size_t> default_mapping;  // index into mappings
  std::uint64_t handshake_timeout_ms = kDefaultHandshakeTimeoutMs;
  std::uint64_t connect_timeout_ms = kDefaultConnectTimeoutMs;
  std::uint64_t shutdown_timeout_ms = kDefaultShutdownTimeoutMs;
  unsigned max_draining_generations = kDefaultMaxDrainingGenerations;
  AdminConfig admin;
  TlsConfig tls;
  AuthConfig auth;
  MetricsConfig metrics;
  AuditConfig audit;
  std::vector<PluginConfig> plugins;
  net::AccessList access;                   // allow/deny at accept
  unsigned max_connections = 0;             // all mappings together; 0: no limit
  unsigned max_connections_per_client = 0;  // sessions from one address; 0: no limit
  Rate connection_rate;                     // per client address, all mappings together
  // Several instances as one (behind round-robin DNS or an L4 balancer): this one's id (1..127,
  // carried in the cancel keys pgproxy issues; 0: none) and the others, where a cancel request
  // for a session this instance does not hold goes.
  unsigned instance_id = 0;
  std::vector<Peer> peers;
  unsigned max_handshakes = 0;            // connections not yet spliced, all workers; 0: no limit
  std::uint64_t idle_timeout_ms = 0;      // no byte either way for this long: close; 0: off
  KeepAlive tcp_keepalive;                // both sides
  std::uint64_t tcp_user_timeout_ms = 0;  // both sides; 0: the kernel's default
  std::string access_log;                 // "" → the main log; "off" → none; else a file
  LogFormat log_format = LogFormat::kText;
  bool log_protocol = false;
  // user by default: the kernel splice is experimental (see pgproxy.yaml(5)); a mapping's own wins.
  SpliceMode splice = SpliceMode::kUser;
  std::string hash;  // of the file's text, for pgproxy_config_info
  std::string text;  // the file's text, for the console's SHOW CONFIG

  unsigned effectiveWorkers() const;
  // The certificate and key a terminate mapping serves (its own, else tls.certificate).
  const std::string& certificateOf(const Mapping& m) const {
    return m.certificate.empty() ? tls.certificate : m.certificate;
  }
  const std::string& keyOf(const Mapping& m) const {
    return m.certificate.empty() ? tls.key : m.key;
  }
  // How the mapping's TLS passthrough sessions move their bytes: user for a mapping whose sessions
  // pgproxy reads (terminate, authenticate), whatever the global splice says.
  SpliceMode spliceOf(const Mapping& m) const {
    if (m.tls != TlsMode::kPassthrough || m.authenticate) {
      return SpliceMode::kUser;
    }
    return m.splice == SpliceMode::kInherit ? splice : m.splice;
  }
};

// Parses and validates YAML text. `name` is used in messages ("name:line:col: message").
base::Result<Config> loadString(const std::string& text, const std::string& name);
// Reads the file and calls loadString.
base::Result<Config> loadFile(const std::string& path);

// Parses "127.0.0.1:9540", "[::1]:9540" or "localhost:9540"; false when malformed.
bool parseHostPort(const std::string& text, ListenAddress& out);

// Validation helpers shared with the router and tests.
bool isValidHostName(const std::string& name);
// A syslog facility's code ("local0" → 16), -1 for a name that is not one.
int syslogFacility(std::string_view name);
bool isIpLiteral(const std::string& s);

}  // namespace pgproxy::config
