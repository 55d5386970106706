#include "pgproxy/config/keys.h"

namespace pgproxy::config {

const std::vector<KeySpec>& topLevelKeys() {
  static const std::vector<KeySpec> keys = {
      {"listen", true, "address and port (or a list of them) to accept clients on"},
      {"debug", true, "log each session's state transitions"},
      {"mappings", true, "external host name to internal PostgreSQL server"},
      {"workers", true, "number of worker processes, or auto"},
      {"pid_file", false, "where the master writes its process id"},
      {"log_file", false, "log destination; stderr when unset"},
      {"default", true, "mapping for clients that send no SNI"},
      {"handshake_timeout", true, "time a client has to finish its preamble"},
      {"connect_timeout", true, "time allowed to connect to a backend"},
      {"shutdown_timeout", true, "how long draining workers keep sessions open"},
      {"max_draining_generations", true, "old worker generations allowed to drain at once"},
      {"admin", true, "HTTP listener for /metrics, /healthz and /readyz"},
      {"access_log", true, "where the per-connection access log goes"},
      {"log_format", true, "access log format: text or json"},
      {"log_protocol", true, "log each protocol message of plaintext and terminated sessions"},
      {"tls", true, "TLS defaults for terminated sessions"},
      {"auth", true, "client authentication by pgproxy, for mappings with authenticate: true"},
      {"allow", true, "client addresses (CIDR) admitted at accept; empty: all"},
      {"deny", true, "client addresses (CIDR) closed at accept"},
      {"max_connections", true, "client sessions at once over all mappings (53300 beyond)"},
      {"max_connections_per_client", true, "sessions at once from one client address (53300)"},
      {"connection_rate", true, "new sessions per client address: {per_client, burst} (53300)"},
      {"max_handshakes", true, "connections still in their handshake; beyond it accepts wait"},
      {"idle_timeout", true, "close a session with no byte either way for this long; off"},
      {"tcp_keepalive", true, "TCP keepalive on both sides: off or {idle, interval, count}"},
      {"tcp_user_timeout", true, "drop a peer that leaves sent data unacknowledged this long"},
      {"metrics", true, "metrics settings: max_pools"},
  };
  return keys;
}

const std::vector<KeySpec>& listenKeys() {
  static const std::vector<KeySpec> keys = {
      {"address", false, "IP address to bind"},
      {"port", false, "TCP port, default 5400"},
  };
  return keys;
}

const std::vector<KeySpec>& adminKeys() {
  static const std::vector<KeySpec> keys = {
      {"listen", true, "address:port of the admin HTTP listener"},
      {"token", true, "bearer token required on every admin request"},
  };
  return keys;
}

const std::vector<KeySpec>& tlsKeys() {
  static const std::vector<KeySpec> keys = {
      {"min_version", true, "lowest TLS version offered to clients: 1.2 or 1.3"},
      {"ciphers", true, "TLS 1.2 cipher list (OpenSSL syntax)"},
      {"ciphersuites", true, "TLS 1.3 cipher suites (OpenSSL syntax)"},
      {"certificate", true, "default certificate chain for terminate mappings"},
      {"key", true, "private key of the default certificate"},
      {"require", true, "refuse clients that do not use TLS"},
  };
  return keys;
}

const std::vector<KeySpec>& authKeys() {
  static const std::vector<KeySpec> keys = {
      {"type", true, "scram-sha-256 (default), md5 or trust"},
      {"file", true, "auth file: one \"user\" \"secret\" line per user (PgBouncer's format)"},
      {"query", true, "auth_query: SQL that returns the secret of a user not in the file"},
      {"user", true, "user (in the auth file) that runs auth.query"},
      {"database", true, "database auth.query runs in, default postgres"},
      {"cache", true, "how long a secret auth.query returned is trusted, default 60s"},
  };
  return keys;
}

const std::vector<KeySpec>& backendKeys() {
  static const std::vector<KeySpec> keys = {
      {"host", true, "backend PostgreSQL host name or IP address"},
      {"port", true, "backend port, default 5432"},
      {"weight", true, "share of new sessions for round_robin and random, default 1"},
  };
  return keys;
}

const std::vector<KeySpec>& healthCheckKeys() {
  static const std::vector<KeySpec> keys = {
      {"interval", true, "time between checks of each backend, default 2s"},
      {"timeout", true, "time a check may take, default 1s"},
      {"fall", true, "consecutive failures before a backend is down, default 3"},
      {"rise", true, "consecutive successes before it is up again, default 2"},
      {"user", true, "log in as this user and check pg_is_in_recovery() (needed for role)"},
      {"password_file", true, "file holding the health-check user's password"},
      {"database", true, "database the health-check user logs in to, default postgres"},
  };
  return keys;
}

const std::vector<KeySpec>& mappingKeys() {
  static const std::vector<KeySpec> keys = {
      {"external", true, "host name clients connect to (SNI); *.domain wildcards allowed"},
      {"internal", true, "backend PostgreSQL host (shorthand for one backend)"},
      {"port", true, "backend port, default 5432"},
      {"backends", true, "list of {host, port, weight}: a backend group"},
      {"balance", true, "round_robin (default), least_conn, random or first"},
      {"health_check", true, "active checks: interval, timeout, fall, rise, user"},
      {"role", true, "any (default), primary or standby: which servers take sessions"},
      {"allow", true, "client addresses (CIDR) admitted to this mapping"},
      {"deny", true, "client addresses (CIDR) refused for this mapping"},
      {"max_connections", true, "client sessions at once for this mapping (53300 beyond)"},
      {"connection_rate", true, "new sessions per client address for this mapping"},
      {"tls", true, "passthrough (default) or terminate"},
      {"certificate", true, "certificate chain served for this mapping (terminate)"},
      {"key", true, "private key of the mapping's certificate"},
      {"backend_tls", true, "disable, require (default), verify-ca or verify-full"},
      {"backend_ca", true, "CA file that verifies the backend's certificate"},
      {"backend_sni", true, "server name sent to and verified against the backend"},
      {"authenticate", true, "pgproxy authenticates clients (auth) and logs in for them"},
      {"pool", true, "pool server connections for authenticated clients: mode, size, ..."},
  };
  return keys;
}

const std::vector<KeySpec>& poolKeys() {
  static const std::vector<KeySpec> keys = {
      {"mode", true, "session (default), transaction or statement: when a server goes back"},
      {"size", true, "server connections per (backend, user, database), default 20"},
      {"min_size", true, "server connections kept open and warm, default 0"},
      {"reserve_size", true, "extra server connections for clients that waited reserve_timeout"},
      {"reserve_timeout", true, "wait before a client may take a reserve connection, default 5s"},
      {"max_db_connections", true, "server connections per (backend, database); default no cap"},
      {"query_wait_timeout", true, "longest wait for a server connection, default 2m"},
      {"server_idle_timeout", true, "close server connections idle this long, default 10m"},
      {"server_lifetime", true, "close server connections this old when released, default 1h"},
      {"server_reset_query", true, "run on release in session mode, default DISCARD ALL"},
      {"server_check_query", true, "run before reusing a server idle for server_check_delay"},
      {"server_check_delay", true, "idle time after which a server is checked, default 30s"},
  };
  return keys;
}

const std::vector<KeySpec>& metricsKeys() {
  static const std::vector<KeySpec> keys = {
      {"max_pools", true, "pool label sets exported; the rest fold into user=\"other\""},
  };
  return keys;
}

const std::vector<KeySpec>& rateKeys() {
  static const std::vector<KeySpec> keys = {
      {"per_client", true, "sessions per second (20/s) or minute (100/m) from one address"},
      {"burst", true, "sessions allowed at once above the rate; default the rate's number"},
  };
  return keys;
}

const std::vector<KeySpec>& keepAliveKeys() {
  static const std::vector<KeySpec> keys = {
      {"idle", true, "idle time before the first probe (TCP_KEEPIDLE)"},
      {"interval", true, "time between probes (TCP_KEEPINTVL)"},
      {"count", true, "unanswered probes before the peer is dead (TCP_KEEPCNT)"},
  };
  return keys;
}

}  // namespace pgproxy::config
