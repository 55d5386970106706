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
      {"log_protocol", true, "log each protocol message of plaintext sessions (debugging)"},
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

const std::vector<KeySpec>& mappingKeys() {
  static const std::vector<KeySpec> keys = {
      {"external", true, "host name clients connect to (SNI); *.domain wildcards allowed"},
      {"internal", true, "backend PostgreSQL host"},
      {"port", true, "backend port, default 5432"},
  };
  return keys;
}

}  // namespace pgproxy::config
