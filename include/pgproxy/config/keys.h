#pragma once

#include <string>
#include <vector>

namespace pgproxy::config {

// A configuration key as the loader's tables define it (src/config/loader.cc, one table per
// block): the parser accepts exactly these, the reload path reads the `reloadable` flag, and a
// unit test checks that each one is documented in man/pgproxy.yaml.5 and the sample file.
struct KeySpec {
  const char* name;
  bool reloadable;
  const char* summary;
};

const std::vector<KeySpec>& topLevelKeys();
const std::vector<KeySpec>& listenKeys();
const std::vector<KeySpec>& mappingKeys();
const std::vector<KeySpec>& adminKeys();
const std::vector<KeySpec>& tlsKeys();
const std::vector<KeySpec>& authKeys();
const std::vector<KeySpec>& backendKeys();
const std::vector<KeySpec>& healthCheckKeys();
const std::vector<KeySpec>& poolKeys();        // a mapping's pool
const std::vector<KeySpec>& routeKeys();       // a mapping's routes
const std::vector<KeySpec>& routeMatchKeys();  // a route's match
const std::vector<KeySpec>& metricsKeys();     // metrics
const std::vector<KeySpec>& auditKeys();       // audit
const std::vector<KeySpec>& pluginKeys();      // plugins
const std::vector<KeySpec>& rateKeys();        // connection_rate
const std::vector<KeySpec>& peerKeys();        // peers
const std::vector<KeySpec>& keepAliveKeys();   // tcp_keepalive
std::vector<std::string> keyNames(const std::vector<KeySpec>& specs);

// Every block's keys, for what must cover them all (the documentation test): a new block's
// table is listed here once.
struct KeyBlock {
  const char* path;  // "" for the top level, "mappings.pool", ...
  const std::vector<KeySpec>* keys;
};
const std::vector<KeyBlock>& keyBlocks();

}  // namespace pgproxy::config
