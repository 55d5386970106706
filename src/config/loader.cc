// YAML → Config. The only file that includes <yaml.h>.
#include <arpa/inet.h>
#include <openssl/crypto.h>
#include <unistd.h>
#include <yaml.h>

#include <cerrno>
#include <cstdio>
#include <cstring>
#include <fstream>
#include <set>
#include <sstream>

#include "pgproxy/base/text.h"
#include "pgproxy/config/config.h"
#include "pgproxy/config/keys.h"

namespace pgproxy::config {
namespace {

class Parser {
 public:
  Parser(const std::string& name, yaml_document_t* doc) : name_(name), doc_(doc) {}

  void fail(const yaml_node_t* node, const std::string& message) { fail(markOf(node), message); }
  void fail(const Mark& m, const std::string& message) {
    errors_.push_back(name_ + ":" + std::to_string(m.line) + ":" + std::to_string(m.column) + ": " +
                      message);
  }
  bool failed() const { return !errors_.empty(); }
  std::string errorText() const {
    std::string out;
    for (const auto& e : errors_) {
      out += out.empty() ? e : "\n" + e;
    }
    return out;
  }

  static Mark markOf(const yaml_node_t* node) {
    return Mark{static_cast<int>(node->start_mark.line) + 1,
                static_cast<int>(node->start_mark.column) + 1};
  }

  yaml_node_t* node(int index) { return yaml_document_get_node(doc_, index); }

  // Scalar text, or nullopt (with an error) when the node is not a scalar.
  std::optional<std::string> scalar(yaml_node_t* n, const std::string& what) {
    if (n->type != YAML_SCALAR_NODE) {
      fail(n, what + " must be a single value, not a " + typeName(n));
      return std::nullopt;
    }
    return std::string(reinterpret_cast<const char*>(n->data.scalar.value), n->data.scalar.length);
  }

  std::optional<bool> boolean(yaml_node_t* n, const std::string& what) {
    auto s = scalar(n, what);
    if (!s) {
      return std::nullopt;
    }
    std::string v = base::toLowerAscii(*s);
    if (v == "true" || v == "yes" || v == "on") {
      return true;
    }
    if (v == "false" || v == "no" || v == "off") {
      return false;
    }
    fail(n, what + " must be true or false, not \"" + *s + "\"");
    return std::nullopt;
  }

  std::optional<std::uint16_t> port(yaml_node_t* n, const std::string& what) {
    auto s = scalar(n, what);
    if (!s) {
      return std::nullopt;
    }
    auto v = base::parseUnsigned(*s);
    if (!v || *v < 1 || *v > 65535) {
      fail(n, what + " must be a port number from 1 to 65535, not \"" + *s + "\"");
      return std::nullopt;
    }
    return static_cast<std::uint16_t>(*v);
  }

  std::optional<std::uint64_t> duration(yaml_node_t* n, const std::string& what) {
    auto s = scalar(n, what);
    if (!s) {
      return std::nullopt;
    }
    auto v = base::parseDurationMs(*s);
    if (!v) {
      fail(n, what + " must be a duration such as 500ms, 10s or 2m, not \"" + *s + "\"");
    }
    return v;
  }

  // A duration, or "off" (0: the feature is off). One error at most.
  std::optional<std::uint64_t> durationOrOff(yaml_node_t* n, const std::string& what) {
    if (n->type == YAML_SCALAR_NODE &&
        std::string_view(reinterpret_cast<const char*>(n->data.scalar.value),
                         n->data.scalar.length) == "off") {
      return 0;
    }
    return duration(n, what);
  }

  // Calls fn(keyNode, valueNode) for every pair, rejecting keys not in `known` with a suggestion.
  template <typename Fn>
  void forEachKey(yaml_node_t* map, const std::string& where, const std::vector<std::string>& known,
                  Fn fn) {
    if (map->type != YAML_MAPPING_NODE) {
      fail(map, where + " must be a mapping of keys to values, not a " + typeName(map));
      return;
    }
    std::set<std::string> seen;
    for (auto* p = map->data.mapping.pairs.start; p < map->data.mapping.pairs.top; ++p) {
      yaml_node_t* k = node(p->key);
      yaml_node_t* v = node(p->value);
      auto key = scalar(k, "a key");
      if (!key) {
        continue;
      }
      bool isKnown = false;
      for (const auto& name : known) {
        isKnown = isKnown || name == *key;
      }
      if (!isKnown) {
        fail(k, "unknown key \"" + *key + "\"" + (where.empty() ? "" : " in " + where) +
                    suggestion(*key, known));
        continue;
      }
      if (!seen.insert(*key).second) {
        fail(k, "duplicate key \"" + *key + "\"");
        continue;
      }
      fn(*key, k, v);
    }
  }

  static std::string typeName(const yaml_node_t* n) {
    switch (n->type) {
      case YAML_SCALAR_NODE:
        return "single value";
      case YAML_SEQUENCE_NODE:
        return "list";
      case YAML_MAPPING_NODE:
        return "mapping";
      default:
        return "empty node";
    }
  }

 private:
  static std::string suggestion(const std::string& key, const std::vector<std::string>& known) {
    std::string best;
    std::size_t bestDistance = 3;  // further than this is not a typo
    for (const auto& name : known) {
      std::size_t d = base::editDistance(key, name);
      if (d < bestDistance) {
        bestDistance = d;
        best = name;
      }
    }
    return best.empty() ? "" : " (did you mean \"" + best + "\"?)";
  }

  const std::string& name_;
  yaml_document_t* doc_;
  std::vector<std::string> errors_;
};

void parseListenEntry(Parser& p, yaml_node_t* n, Config& cfg) {
  ListenAddress addr;
  addr.address = "0.0.0.0";
  addr.mark = Parser::markOf(n);
  bool fine = true;
  p.forEachKey(n, "listen", keyNames(listenKeys()),
               [&](const std::string& key, yaml_node_t*, yaml_node_t* v) {
                 if (key == "address") {
                   auto s = p.scalar(v, "listen.address");
                   if (!s) {
                     fine = false;
                     return;
                   }
                   std::string a = *s == "*" ? "0.0.0.0" : *s == "localhost" ? "127.0.0.1" : *s;
                   if (!isIpLiteral(a)) {
                     p.fail(v,
                            "listen.address must be an IP address such as 0.0.0.0, 127.0.0.1 "
                            "or ::, not \"" +
                                *s + "\"");
                     fine = false;
                   }
                   addr.address = a;
                 } else if (key == "port") {
                   auto port = p.port(v, "listen.port");
                   fine = fine && port.has_value();
                   addr.port = port.value_or(0);
                 }
               });
  if (fine) {
    for (const auto& other : cfg.listen) {
      if (other == addr) {
        p.fail(n, "duplicate listen address " + addr.address + ":" + std::to_string(addr.port));
        return;
      }
    }
    cfg.listen.push_back(addr);
  }
}

// Whether two listening sockets would want the same port of the same address: equal ports, the
// same family (IPv6 sockets are IPV6_V6ONLY, so "::" and "0.0.0.0" coexist), and equal addresses
// or either one the family's wildcard. Addresses compare as bytes, so "::1" equals "0::1".
bool listenAddressesOverlap(const ListenAddress& a, const ListenAddress& b) {
  if (a.port != b.port) {
    return false;
  }
  for (int family : {AF_INET, AF_INET6}) {
    unsigned char x[sizeof(in6_addr)] = {}, y[sizeof(in6_addr)] = {};
    bool ax = inet_pton(family, a.address.c_str(), x) == 1;
    bool by = inet_pton(family, b.address.c_str(), y) == 1;
    if (ax != by) {
      return false;  // different families
    }
    if (ax) {
      const unsigned char any[sizeof(in6_addr)] = {};
      std::size_t len = family == AF_INET ? sizeof(in_addr) : sizeof(in6_addr);
      return std::memcmp(x, y, len) == 0 || std::memcmp(x, any, len) == 0 ||
             std::memcmp(y, any, len) == 0;
    }
  }
  return false;
}

// admin.listen on a data listen address would bind the same port twice: refused here, with the
// line of each, rather than as a bind error at start (or, on reload, as a failed reload).
void checkAdminListen(Parser& p, const Config& cfg, bool listen_defaulted) {
  if (!cfg.admin.enabled) {
    return;
  }
  auto text = [](const ListenAddress& l) {
    bool v6 = l.address.find(':') != std::string::npos;
    return (v6 ? "[" + l.address + "]" : l.address) + ":" + std::to_string(l.port);
  };
  const ListenAddress& admin = cfg.admin.listen;
  for (const auto& l : cfg.listen) {
    if (!listenAddressesOverlap(admin, l)) {
      continue;
    }
    std::string where = listen_defaulted ? " (the default, as \"listen\" is not set)"
                                         : " (line " + std::to_string(l.mark.line) + ")";
    std::string a = text(admin), d = text(l);
    p.fail(admin.mark, "admin.listen " + a + (a == d ? " is also" : " overlaps") +
                           " the data listen address " + d + where +
                           ": the admin endpoint needs a port of its own");
    return;
  }
}

void parseListen(Parser& p, yaml_node_t* n, Config& cfg) {
  if (n->type == YAML_SEQUENCE_NODE) {
    for (auto* i = n->data.sequence.items.start; i < n->data.sequence.items.top; ++i) {
      parseListenEntry(p, p.node(*i), cfg);
    }
    if (cfg.listen.empty() && !p.failed()) {
      p.fail(n, "listen must name at least one address");
    }
    return;
  }
  parseListenEntry(p, n, cfg);
}

// A keyword from a fixed set ("balance: least_conn"); the error lists the choices. False (and
// `out` untouched) when the value is not one of them.
template <typename T>
bool parseChoice(Parser& p, yaml_node_t* v, const std::string& what,
                 std::initializer_list<std::pair<const char*, T>> choices, T& out) {
  auto s = p.scalar(v, what);
  if (!s) {
    return false;
  }
  std::string names;
  std::size_t i = 0;
  for (const auto& [name, value] : choices) {
    if (*s == name) {
      out = value;
      return true;
    }
    names += (i == 0 ? "" : i + 1 == choices.size() ? " or " : ", ") + std::string(name);
    ++i;
  }
  p.fail(v, what + " must be " + names + ", not \"" + *s + "\"");
  return false;
}

// A CIDR block or a list of them.
void parseCidrs(Parser& p, yaml_node_t* n, const std::string& what, std::vector<net::Cidr>& out) {
  auto one = [&](yaml_node_t* v) {
    auto s = p.scalar(v, what);
    if (!s) {
      return;
    }
    auto c = net::Cidr::parse(*s);
    if (!c) {
      p.fail(v, what + " entry \"" + *s +
                    "\" is not an IP address or CIDR block such as 10.0.0.0/8 (host bits must "
                    "be zero)");
      return;
    }
    out.push_back(*c);
  };
  if (n->type == YAML_SEQUENCE_NODE) {
    for (auto* i = n->data.sequence.items.start; i < n->data.sequence.items.top; ++i) {
      one(p.node(*i));
    }
  } else {
    one(n);
  }
}

std::optional<unsigned> boundedNumber(Parser& p, yaml_node_t* v, const std::string& what,
                                      unsigned lo, unsigned hi) {
  auto s = p.scalar(v, what);
  if (!s) {
    return std::nullopt;
  }
  auto n = base::parseUnsigned(*s);
  if (!n || *n < lo || *n > hi) {
    p.fail(v, what + " must be a number from " + std::to_string(lo) + " to " + std::to_string(hi) +
                  ", not \"" + *s + "\"");
    return std::nullopt;
  }
  return static_cast<unsigned>(*n);
}

constexpr std::uint64_t kMaxTcpUserTimeoutMs = 2'147'483'647;  // INT_MAX ms, about 596 hours

// "20/s", "100/m", "1000/h" or a bare number (per second); false (with an error) otherwise.
bool parseRateText(Parser& p, yaml_node_t* v, const std::string& what, Rate& out) {
  auto s = p.scalar(v, what);
  if (!s) {
    return false;
  }
  std::string text = *s;
  std::uint32_t period = 1000;
  if (auto slash = text.find('/'); slash != std::string::npos) {
    std::string unit = text.substr(slash + 1);
    period = unit == "s"                    ? 1000
             : unit == "m" || unit == "min" ? 60'000
             : unit == "h"                  ? 3'600'000
                                            : 0;
    text.resize(slash);
  }
  auto count = base::parseUnsigned(text);
  if (period == 0 || !count || *count < 1 || *count > 1'000'000) {
    p.fail(v, what +
                  " must be a rate such as 20/s, 100/m or 1000/h (1 to 1000000 per unit), "
                  "not \"" +
                  *s + "\"");
    return false;
  }
  out.count = static_cast<std::uint32_t>(*count);
  out.period_ms = period;
  return true;
}

// {per_client: 20/s, burst: 40}, or just the rate.
void parseRate(Parser& p, yaml_node_t* n, const std::string& where, Rate& out) {
  if (n->type == YAML_SCALAR_NODE) {
    parseRateText(p, n, where, out);
  } else {
    bool haveRate = false;
    p.forEachKey(n, where, keyNames(rateKeys()),
                 [&](const std::string& key, yaml_node_t*, yaml_node_t* v) {
                   if (key == "burst") {
                     out.burst = boundedNumber(p, v, where + ".burst", 1, 1'000'000).value_or(0);
                   } else {
                     haveRate = parseRateText(p, v, where + ".per_client", out);
                   }
                 });
    if (n->type == YAML_MAPPING_NODE && !haveRate && !p.failed()) {
      p.fail(n, where + " needs per_client, for example {per_client: 20/s, burst: 40}");
    }
  }
  if (out.burst == 0) {
    out.burst = out.count;
  }
}

void parseKeepAlive(Parser& p, yaml_node_t* n, KeepAlive& out) {
  if (n->type == YAML_SCALAR_NODE) {
    // "off" (or "on": the kernel's settings).
    out.enabled = p.boolean(n, "tcp_keepalive").value_or(true);
    return;
  }
  p.forEachKey(n, "tcp_keepalive", keyNames(keepAliveKeys()),
               [&](const std::string& key, yaml_node_t*, yaml_node_t* v) {
                 const std::string what = "tcp_keepalive." + key;
                 if (key == "count") {
                   out.count = boundedNumber(p, v, what, 1, 127).value_or(0);
                   return;
                 }
                 auto ms = p.duration(v, what);
                 if (ms && (*ms < 1000 || *ms > 32767 * 1000ull)) {
                   p.fail(v, what + " must be from 1s to 32767s (whole seconds)");
                   return;
                 }
                 (key == "idle" ? out.idle_s : out.interval_s) =
                     static_cast<std::uint32_t>(ms.value_or(0) / 1000);
               });
}

bool parseBackends(Parser& p, yaml_node_t* n, Mapping& m) {
  if (n->type != YAML_SEQUENCE_NODE || n->data.sequence.items.start == n->data.sequence.items.top) {
    p.fail(n, "backends must be a non-empty list of {host, port, weight}");
    return false;
  }
  if (n->data.sequence.items.top - n->data.sequence.items.start > 64) {
    p.fail(n, "a mapping may have at most 64 backends");
    return false;
  }
  bool fine = true;
  for (auto* i = n->data.sequence.items.start; i < n->data.sequence.items.top; ++i) {
    yaml_node_t* b = p.node(*i);
    Backend be;
    be.mark = Parser::markOf(b);
    bool haveHost = false;
    p.forEachKey(b, "a backend", keyNames(backendKeys()),
                 [&](const std::string& key, yaml_node_t*, yaml_node_t* v) {
                   if (key == "host") {
                     auto s = p.scalar(v, "host");
                     haveHost = s.has_value();
                     be.host = s.value_or("");
                     if (s && !isValidHostName(*s) && !isIpLiteral(*s)) {
                       p.fail(v,
                              "backend host \"" + *s + "\" is not a valid host name or IP address");
                       fine = false;
                     }
                   } else if (key == "port") {
                     auto port = p.port(v, "backend port");
                     fine = fine && port.has_value();
                     be.port = port.value_or(0);
                   } else if (key == "weight") {
                     auto w = boundedNumber(p, v, "weight", 1, 1000);
                     fine = fine && w.has_value();
                     be.weight = w.value_or(1);
                   }
                 });
    if (b->type != YAML_MAPPING_NODE) {
      fine = false;
      continue;
    }
    if (!haveHost) {
      p.fail(b, "backend has no \"host\"");
      fine = false;
      continue;
    }
    for (const auto& other : m.backends) {
      if (other.key() == be.key()) {
        p.fail(b, "duplicate backend " + be.key() + " (first at line " +
                      std::to_string(other.mark.line) + ")");
        fine = false;
      }
    }
    m.backends.push_back(be);
  }
  return fine;
}

void parseHealthCheck(Parser& p, yaml_node_t* n, Mapping& m) {
  m.health.enabled = true;
  p.forEachKey(n, "health_check", keyNames(healthCheckKeys()),
               [&](const std::string& key, yaml_node_t*, yaml_node_t* v) {
                 if (key == "user" || key == "password_file" || key == "database") {
                   auto s = p.scalar(v, "health_check." + key);
                   if (s && s->empty()) {
                     p.fail(v, "health_check." + key + " must not be empty");
                   }
                   (key == "user"            ? m.health.user
                    : key == "password_file" ? m.health.password_file
                                             : m.health.database) = s.value_or("");
                 } else if (key == "interval" || key == "timeout") {
                   auto ms = p.duration(v, "health_check." + key);
                   if (ms && *ms == 0) {
                     p.fail(v, "health_check." + key + " must be greater than zero");
                   }
                   (key == "interval" ? m.health.interval_ms : m.health.timeout_ms) =
                       ms.value_or(1);
                 } else {
                   auto k = boundedNumber(p, v, "health_check." + key, 1, 100);
                   (key == "fall" ? m.health.fall : m.health.rise) = k.value_or(1);
                 }
               });
}

// Server connections per pool: bounded so that a typo cannot ask one worker for more sockets
// than a process can hold.
constexpr unsigned kMaxPoolSize = 10'000;

void parsePool(Parser& p, yaml_node_t* n, PoolConfig& pool) {
  pool.enabled = true;
  pool.mark = Parser::markOf(n);
  yaml_node_t* minSizeNode = nullptr;
  bool sizeOk = true;
  p.forEachKey(
      n, "pool", keyNames(poolKeys()), [&](const std::string& key, yaml_node_t*, yaml_node_t* v) {
        const std::string what = "pool." + key;
        if (key == "mode") {
          parseChoice<PoolMode>(p, v, what,
                                {{"session", PoolMode::kSession},
                                 {"transaction", PoolMode::kTransaction},
                                 {"statement", PoolMode::kStatement}},
                                pool.mode);
        } else if (key == "size") {
          auto size = boundedNumber(p, v, what, 1, kMaxPoolSize);
          sizeOk = size.has_value();
          pool.size = size.value_or(pool.size);
        } else if (key == "min_size" || key == "reserve_size") {
          auto k = boundedNumber(p, v, what, 0, kMaxPoolSize);
          (key == "min_size" ? pool.min_size : pool.reserve_size) = k.value_or(0);
          if (key == "min_size" && k) {
            minSizeNode = v;
          }
        } else if (key == "max_db_connections") {
          pool.max_db_connections = boundedNumber(p, v, what, 0, 1'000'000).value_or(0);
        } else if (key == "reserve_timeout") {
          pool.reserve_timeout_ms = p.duration(v, what).value_or(0);
        } else if (key == "server_check_delay") {
          // No "off": 0 means checking before every reuse, the opposite of off.
          pool.server_check_delay_ms = p.duration(v, what).value_or(0);
        } else if (key == "query_wait_timeout" || key == "server_idle_timeout" ||
                   key == "server_lifetime") {
          auto ms = p.durationOrOff(v, what).value_or(0);
          (key == "query_wait_timeout"    ? pool.query_wait_timeout_ms
           : key == "server_idle_timeout" ? pool.server_idle_timeout_ms
                                          : pool.server_lifetime_ms) = ms;
        } else {
          // server_reset_query, server_check_query: SQL; empty is meaningful (none, an empty
          // query).
          auto s = p.scalar(v, what).value_or("");
          (key == "server_reset_query" ? pool.server_reset_query : pool.server_check_query) = s;
        }
      });
  // Against a size that was itself refused, the comparison would only add a confusing error.
  if (minSizeNode && sizeOk && pool.min_size > pool.size) {
    p.fail(minSizeNode, "pool.min_size (" + std::to_string(pool.min_size) +
                            ") must not be more than pool.size (" + std::to_string(pool.size) +
                            ")");
  }
}

void parseMapping(Parser& p, yaml_node_t* n, Config& cfg) {
  Mapping m;
  m.mark = Parser::markOf(n);
  bool haveExternal = false, haveInternal = false, havePort = false, haveBackends = false,
       authenticateOff = false, fine = true;
  p.forEachKey(
      n, "a mapping", keyNames(mappingKeys()),
      [&](const std::string& key, yaml_node_t*, yaml_node_t* v) {
        if (key == "external") {
          auto s = p.scalar(v, "external");
          if (!s) {
            fine = false;
            return;
          }
          haveExternal = true;
          m.external = base::toLowerAscii(*s);
          std::string host = m.external.rfind("*.", 0) == 0 ? m.external.substr(2) : m.external;
          if (m.external.empty()) {
            p.fail(v, "external must not be empty");
            fine = false;
          } else if (!isValidHostName(host) || isIpLiteral(host)) {
            p.fail(v, "external \"" + *s +
                          "\" is not a valid host name (a wildcard is allowed only as a "
                          "whole leading label: *.example.com)");
            fine = false;
          }
        } else if (key == "internal") {
          auto s = p.scalar(v, "internal");
          if (!s) {
            fine = false;
            return;
          }
          haveInternal = true;
          m.internal = *s;
          if (!isValidHostName(*s) && !isIpLiteral(*s)) {
            p.fail(v, "internal \"" + *s + "\" is not a valid host name or IP address");
            fine = false;
          }
        } else if (key == "port") {
          auto port = p.port(v, "port");
          fine = fine && port.has_value();
          havePort = true;
          m.port = port.value_or(0);
        } else if (key == "backends") {
          haveBackends = true;
          fine = parseBackends(p, v, m) && fine;
        } else if (key == "balance") {
          fine = parseChoice<Balance>(p, v, "balance",
                                      {{"round_robin", Balance::kRoundRobin},
                                       {"least_conn", Balance::kLeastConn},
                                       {"random", Balance::kRandom},
                                       {"first", Balance::kFirst}},
                                      m.balance) &&
                 fine;
        } else if (key == "health_check") {
          parseHealthCheck(p, v, m);
        } else if (key == "allow" || key == "deny") {
          parseCidrs(p, v, key, key == "allow" ? m.access.allow : m.access.deny);
        } else if (key == "max_connections") {
          auto n = boundedNumber(p, v, "max_connections", 1, 1'000'000);
          fine = fine && n.has_value();
          m.max_connections = n.value_or(0);
        } else if (key == "connection_rate") {
          parseRate(p, v, "connection_rate", m.connection_rate);
        } else if (key == "role") {
          fine = parseChoice<BackendRole>(p, v, "role",
                                          {{"any", BackendRole::kAny},
                                           {"primary", BackendRole::kPrimary},
                                           {"standby", BackendRole::kStandby}},
                                          m.role) &&
                 fine;
        } else if (key == "tls") {
          fine = parseChoice<TlsMode>(
                     p, v, "tls",
                     {{"passthrough", TlsMode::kPassthrough}, {"terminate", TlsMode::kTerminate}},
                     m.tls) &&
                 fine;
        } else if (key == "authenticate") {
          m.authenticate = p.boolean(v, "authenticate").value_or(false);
          authenticateOff = !m.authenticate;
        } else if (key == "pool") {
          parsePool(p, v, m.pool);
        } else if (key == "backend_tls") {
          fine = parseChoice<BackendTls>(p, v, "backend_tls",
                                         {{"disable", BackendTls::kDisable},
                                          {"require", BackendTls::kRequire},
                                          {"verify-ca", BackendTls::kVerifyCa},
                                          {"verify-full", BackendTls::kVerifyFull}},
                                         m.backend_tls) &&
                 fine;
        } else {
          // certificate, key, backend_ca, backend_sni: plain strings.
          auto s = p.scalar(v, key);
          if (!s || s->empty()) {
            if (s) {
              p.fail(v, key + " must not be empty");
            }
            fine = false;
            return;
          }
          (key == "certificate"  ? m.certificate
           : key == "key"        ? m.key
           : key == "backend_ca" ? m.backend_ca
                                 : m.backend_sni) = *s;
        }
      });
  if (n->type != YAML_MAPPING_NODE) {
    return;
  }
  if (m.role != BackendRole::kAny && m.health.user.empty()) {
    p.fail(n, "mapping \"" + m.external +
                  "\" sets role, which needs health_check.user (the check logs in to ask "
                  "pg_is_in_recovery())");
    fine = false;
  }
  if (!m.health.password_file.empty() && m.health.user.empty()) {
    p.fail(n, "health_check.password_file needs health_check.user");
    fine = false;
  }
  if (m.pool.enabled) {
    if (authenticateOff) {
      p.fail(n, "mapping \"" + m.external +
                    "\" has a pool but authenticate: false: pgproxy authenticates the clients of "
                    "a pool itself (leave authenticate out)");
      fine = false;
    }
    m.authenticate = true;
  }
  if (m.certificate.empty() != m.key.empty()) {
    p.fail(n, "mapping \"" + m.external + "\" needs both certificate and key, or neither");
    fine = false;
  }
  if (m.tls == TlsMode::kPassthrough &&
      (!m.certificate.empty() || !m.backend_ca.empty() || !m.backend_sni.empty())) {
    p.fail(n, "mapping \"" + m.external +
                  "\" sets certificate/backend_ca/backend_sni but is not tls: terminate "
                  "(passthrough sessions are encrypted end to end by the backend)");
    fine = false;
  }
  if (!haveExternal) {
    p.fail(n, "mapping has no \"external\" host name");
    fine = false;
  }
  if (haveBackends && (haveInternal || havePort)) {
    p.fail(n, "mapping \"" + m.external +
                  "\" sets both internal/port and backends: use one or the other");
    fine = false;
  } else if (!haveInternal && !haveBackends) {
    p.fail(n, "mapping has no \"internal\" host (or \"backends\" list)");
    fine = false;
  }
  if (!fine) {
    return;
  }
  if (haveBackends) {
    m.internal = m.backends.front().host;
    m.port = m.backends.front().port;
  } else {
    m.backends.push_back(Backend{m.internal, m.port, 1, m.mark});
  }
  for (const auto& other : cfg.mappings) {
    if (other.external == m.external) {
      p.fail(n, "duplicate external \"" + m.external + "\" (first defined at line " +
                    std::to_string(other.mark.line) + ")");
      return;
    }
  }
  cfg.mappings.push_back(m);
}

void parseMappings(Parser& p, yaml_node_t* n, Config& cfg) {
  if (n->type != YAML_SEQUENCE_NODE) {
    p.fail(n, "mappings must be a list, not a " + Parser::typeName(n));
    return;
  }
  std::size_t count = 0;
  for (auto* i = n->data.sequence.items.start; i < n->data.sequence.items.top; ++i, ++count) {
    if (count == kMaxMappings) {
      auto total =
          static_cast<std::size_t>(n->data.sequence.items.top - n->data.sequence.items.start);
      p.fail(p.node(*i), "too many mappings: " + std::to_string(total) + ", at most " +
                             std::to_string(kMaxMappings) +
                             " (each has one of pgproxy's fixed slots for its metrics, "
                             "max_connections and connection_rate); this is mapping " +
                             std::to_string(count + 1));
      return;
    }
    parseMapping(p, p.node(*i), cfg);
  }
}

void parseAdmin(Parser& p, yaml_node_t* n, Config& cfg) {
  p.forEachKey(
      n, "admin", keyNames(adminKeys()), [&](const std::string& key, yaml_node_t*, yaml_node_t* v) {
        auto s = p.scalar(v, "admin." + key);
        if (!s) {
          return;
        }
        if (key == "listen") {
          if (!parseHostPort(*s, cfg.admin.listen)) {
            p.fail(v,
                   "admin.listen must be ADDRESS:PORT such as 127.0.0.1:9540, not \"" + *s + "\"");
            return;
          }
          cfg.admin.listen.mark = Parser::markOf(v);
          cfg.admin.enabled = true;
        } else if (key == "token") {
          if (s->empty()) {
            p.fail(v, "admin.token must not be empty (leave it out to disable it)");
          }
          cfg.admin.token = *s;
        }
      });
  if (n->type == YAML_MAPPING_NODE && !cfg.admin.enabled && !p.failed()) {
    p.fail(n, "admin needs a \"listen\" address, such as 127.0.0.1:9540");
  }
}

void parseTls(Parser& p, yaml_node_t* n, Config& cfg) {
  p.forEachKey(n, "tls", keyNames(tlsKeys()),
               [&](const std::string& key, yaml_node_t*, yaml_node_t* v) {
                 if (key == "require") {
                   cfg.tls.require = p.boolean(v, "tls.require").value_or(false);
                   return;
                 }
                 auto s = p.scalar(v, "tls." + key);
                 if (!s) {
                   return;
                 }
                 if (key == "min_version") {
                   if (*s != "1.2" && *s != "1.3") {
                     p.fail(v, "tls.min_version must be \"1.2\" or \"1.3\", not \"" + *s + "\"");
                   }
                   cfg.tls.min_version = *s;
                 } else if (key == "ciphers") {
                   cfg.tls.ciphers = *s;
                 } else if (key == "ciphersuites") {
                   cfg.tls.ciphersuites = *s;
                 } else if (key == "certificate") {
                   cfg.tls.certificate = *s;
                 } else if (key == "key") {
                   cfg.tls.key = *s;
                 }
               });
  if (cfg.tls.certificate.empty() != cfg.tls.key.empty()) {
    p.fail(n, "tls needs both certificate and key, or neither");
  }
}

void parseAuth(Parser& p, yaml_node_t* n, Config& cfg) {
  cfg.auth.configured = true;
  cfg.auth.mark = Parser::markOf(n);
  yaml_node_t* fileNode = n;
  yaml_node_t* queryNode = nullptr;
  yaml_node_t* userNode = nullptr;
  yaml_node_t* queryOnlyNode = nullptr;  // user, database or cache: meaningless without query
  p.forEachKey(
      n, "auth", keyNames(authKeys()), [&](const std::string& key, yaml_node_t*, yaml_node_t* v) {
        if (key == "type") {
          if (v->type == YAML_SCALAR_NODE && p.scalar(v, "auth.type") == "cert") {
            // ClientAuth lets a cert client in without an exchange, but nothing verifies its
            // certificate yet: accepting it would be trust under another name.
            p.fail(v, "auth type cert is not supported yet: use scram-sha-256, md5 or trust");
            return;
          }
          parseChoice<auth::ClientAuthType>(p, v, "auth.type",
                                            {{"scram-sha-256", auth::ClientAuthType::kScramSha256},
                                             {"md5", auth::ClientAuthType::kMd5},
                                             {"trust", auth::ClientAuthType::kTrust}},
                                            cfg.auth.type);
        } else if (key == "file") {
          cfg.auth.file = p.scalar(v, "auth.file").value_or("");
          fileNode = v;
        } else if (key == "cache") {
          cfg.auth.cache_ms = p.duration(v, "auth.cache").value_or(0);
          queryOnlyNode = queryOnlyNode ? queryOnlyNode : v;
        } else {
          // query, user, database: text that must not be empty.
          auto s = p.scalar(v, "auth." + key);
          if (s && s->empty()) {
            p.fail(v, "auth." + key + " must not be empty");
          }
          if (key == "query") {
            cfg.auth.query = s.value_or("");
            queryNode = v;
          } else {
            (key == "user" ? cfg.auth.query_user : cfg.auth.query_database) = s.value_or("");
            userNode = key == "user" ? v : userNode;
            queryOnlyNode = queryOnlyNode ? queryOnlyNode : v;
          }
        }
      });
  if (p.failed()) {
    return;
  }
  if (!queryNode && queryOnlyNode) {
    p.fail(queryOnlyNode,
           "auth.user, auth.database and auth.cache configure auth.query, which is not set");
    return;
  }
  if (queryNode && !userNode) {
    p.fail(queryNode,
           "auth.query needs auth.user: the user pgproxy logs in as to run it (its secret "
           "must be in auth.file)");
    return;
  }
  if (cfg.auth.file.empty()) {
    if (cfg.auth.type != auth::ClientAuthType::kTrust) {
      p.fail(n, "auth needs a \"file\" of users and secrets (only type: trust works without one)");
    } else if (userNode) {
      p.fail(userNode, "auth.user \"" + cfg.auth.query_user +
                           "\" needs its secret in an auth.file: pgproxy logs in as it to run "
                           "auth.query");
    }
    return;
  }
  std::ifstream in(cfg.auth.file, std::ios::binary);
  if (!in) {
    p.fail(fileNode, "cannot read auth.file \"" + cfg.auth.file + "\": " + std::strerror(errno));
    return;
  }
  std::string text;
  char buf[65536];
  while (in.read(buf, sizeof(buf)) || in.gcount() > 0) {
    text.append(buf, static_cast<std::size_t>(in.gcount()));
    if (text.size() > auth::UserList::kMaxBytes) {
      break;  // parse() names the limit
    }
  }
  auto users = auth::UserList::parse(text, cfg.auth.file);
  OPENSSL_cleanse(text.data(), text.size());
  OPENSSL_cleanse(buf, sizeof(buf));
  if (!users.ok()) {
    p.fail(fileNode, users.error().message);
    return;
  }
  if (userNode && !users->find(cfg.auth.query_user)) {
    p.fail(userNode, "auth.user \"" + cfg.auth.query_user + "\" is not in auth.file \"" +
                         cfg.auth.file +
                         "\": pgproxy logs in as it to run auth.query, with the secret the "
                         "file holds");
    return;
  }
  cfg.auth.users = std::make_shared<const auth::UserList>(std::move(*users));
}

void parseMetrics(Parser& p, yaml_node_t* n, Config& cfg) {
  p.forEachKey(
      n, "metrics", keyNames(metricsKeys()), [&](const std::string&, yaml_node_t*, yaml_node_t* v) {
        // max_pools, the only key.
        cfg.metrics.max_pools = boundedNumber(p, v, "metrics.max_pools", 1, 1'000'000).value_or(1);
      });
}

void parseWorkers(Parser& p, yaml_node_t* n, Config& cfg) {
  auto s = p.scalar(n, "workers");
  if (!s) {
    return;
  }
  if (*s == "auto") {
    cfg.workers = 0;
    return;
  }
  auto v = base::parseUnsigned(*s);
  if (!v || *v < 1 || *v > kMaxWorkers) {
    p.fail(n, "workers must be \"auto\" or a number from 1 to " + std::to_string(kMaxWorkers) +
                  " (a reload runs two generations side by side in the 128 worker slots), not \"" +
                  *s + "\"");
    return;
  }
  cfg.workers = static_cast<unsigned>(*v);
}

void parseRoot(Parser& p, yaml_node_t* root, Config& cfg) {
  yaml_node_t* defaultNode = nullptr;
  std::string defaultName;
  yaml_node_t* mappingsNode = nullptr;
  p.forEachKey(
      root, "", keyNames(topLevelKeys()),
      [&](const std::string& key, yaml_node_t*, yaml_node_t* v) {
        if (key == "listen") {
          parseListen(p, v, cfg);
        } else if (key == "debug") {
          cfg.debug = p.boolean(v, "debug").value_or(false);
        } else if (key == "mappings") {
          mappingsNode = v;
          parseMappings(p, v, cfg);
        } else if (key == "workers") {
          parseWorkers(p, v, cfg);
        } else if (key == "pid_file") {
          cfg.pid_file = p.scalar(v, "pid_file").value_or("");
        } else if (key == "log_file") {
          cfg.log_file = p.scalar(v, "log_file").value_or("");
        } else if (key == "default") {
          defaultNode = v;
          defaultName = base::toLowerAscii(p.scalar(v, "default").value_or(""));
        } else if (key == "handshake_timeout") {
          cfg.handshake_timeout_ms = p.duration(v, "handshake_timeout").value_or(0);
        } else if (key == "connect_timeout") {
          cfg.connect_timeout_ms = p.duration(v, "connect_timeout").value_or(0);
        } else if (key == "shutdown_timeout") {
          cfg.shutdown_timeout_ms = p.duration(v, "shutdown_timeout").value_or(0);
        } else if (key == "admin") {
          parseAdmin(p, v, cfg);
        } else if (key == "tls") {
          parseTls(p, v, cfg);
        } else if (key == "auth") {
          parseAuth(p, v, cfg);
        } else if (key == "metrics") {
          parseMetrics(p, v, cfg);
        } else if (key == "allow" || key == "deny") {
          parseCidrs(p, v, key, key == "allow" ? cfg.access.allow : cfg.access.deny);
        } else if (key == "max_connections") {
          cfg.max_connections = boundedNumber(p, v, "max_connections", 1, 1'000'000).value_or(0);
        } else if (key == "max_connections_per_client") {
          cfg.max_connections_per_client = boundedNumber(p, v, key, 1, 1'000'000).value_or(0);
        } else if (key == "connection_rate") {
          parseRate(p, v, "connection_rate", cfg.connection_rate);
        } else if (key == "max_handshakes") {
          cfg.max_handshakes = boundedNumber(p, v, key, 1, 1'000'000).value_or(0);
        } else if (key == "idle_timeout") {
          cfg.idle_timeout_ms = p.durationOrOff(v, key).value_or(0);
        } else if (key == "tcp_keepalive") {
          parseKeepAlive(p, v, cfg.tcp_keepalive);
        } else if (key == "tcp_user_timeout") {
          cfg.tcp_user_timeout_ms = p.durationOrOff(v, key).value_or(0);
          if (cfg.tcp_user_timeout_ms > kMaxTcpUserTimeoutMs) {
            // The kernel takes an int of milliseconds; a longer value would wrap.
            p.fail(v, "tcp_user_timeout must be at most 596h (the kernel's limit)");
          }
        } else if (key == "access_log") {
          cfg.access_log = p.scalar(v, "access_log").value_or("");
        } else if (key == "log_format") {
          parseChoice<LogFormat>(p, v, "log_format",
                                 {{"text", LogFormat::kText}, {"json", LogFormat::kJson}},
                                 cfg.log_format);
        } else if (key == "log_protocol") {
          cfg.log_protocol = p.boolean(v, "log_protocol").value_or(false);
        } else if (key == "max_draining_generations") {
          auto n = base::parseUnsigned(p.scalar(v, key).value_or(""));
          if (!n || *n < 1 || *n > 64) {
            p.fail(v, "max_draining_generations must be a number from 1 to 64");
          }
          cfg.max_draining_generations = static_cast<unsigned>(n.value_or(1));
        }
      });
  if (p.failed()) {
    return;
  }
  bool listenDefaulted = cfg.listen.empty();
  if (listenDefaulted) {
    cfg.listen.push_back(ListenAddress{"0.0.0.0", 5400, Parser::markOf(root)});
  }
  checkAdminListen(p, cfg, listenDefaulted);
  if (cfg.mappings.empty()) {
    p.fail(mappingsNode ? mappingsNode : root,
           "no mappings: add at least one {external, internal} entry under \"mappings\"");
    return;
  }
  std::set<std::string> distinct;
  for (const auto& m : cfg.mappings) {
    for (const auto& b : m.backends) {
      distinct.insert(b.key());
    }
  }
  if (distinct.size() > kMaxBackends) {
    p.fail(mappingsNode ? mappingsNode : root,
           "too many backends: the mappings name " + std::to_string(distinct.size()) +
               " distinct host:port pairs, at most " + std::to_string(kMaxBackends) +
               " (each has one of pgproxy's fixed slots for its health, role and least_conn "
               "count)");
    return;
  }
  // The mapping plaintext clients reach, if any: the default one (`default`, or the only
  // mapping), unless tls.require turns them away. Its own errors are reported further down.
  std::optional<std::size_t> plaintextMapping;
  if (!cfg.tls.require) {
    for (std::size_t i = 0; i < cfg.mappings.size(); ++i) {
      if (defaultNode ? cfg.mappings[i].external == defaultName : cfg.mappings.size() == 1) {
        plaintextMapping = i;
      }
    }
  }
  for (std::size_t i = 0; i < cfg.mappings.size(); ++i) {
    const Mapping& m = cfg.mappings[i];
    // pgproxy reads what a plaintext or terminated client sends, so it can authenticate (and pool)
    // those; a passthrough mapping still serves the plaintext clients when it is their default.
    if (m.authenticate && m.tls != TlsMode::kTerminate && plaintextMapping != i) {
      p.fail(root, "mapping \"" + m.external + "\" (line " + std::to_string(m.mark.line) +
                       "): " + (m.pool.enabled ? "pool" : "authenticate: true") +
                       " needs tls: terminate: a passthrough session's bytes are the client's "
                       "own TLS session (without terminate pgproxy can authenticate only "
                       "plaintext clients, which reach the default mapping unless tls.require "
                       "is set)");
    }
    if (m.authenticate && !cfg.auth.configured) {
      p.fail(root, "mapping \"" + m.external + "\" (line " + std::to_string(m.mark.line) +
                       ") has " +
                       (m.pool.enabled ? "a pool (whose clients pgproxy authenticates)"
                                       : "authenticate: true") +
                       " but there is no \"auth\" block saying how");
    }
    if (m.tls == TlsMode::kTerminate && cfg.certificateOf(m).empty()) {
      p.fail(root, "mapping \"" + m.external + "\" (line " + std::to_string(m.mark.line) +
                       ") is tls: terminate but has no certificate: set its certificate and key, "
                       "or tls.certificate and tls.key");
    }
  }
  if (cfg.handshake_timeout_ms == 0 || cfg.connect_timeout_ms == 0 ||
      cfg.shutdown_timeout_ms == 0) {
    p.fail(root, "timeouts must be greater than zero");
    return;
  }
  if (defaultNode) {
    for (std::size_t i = 0; i < cfg.mappings.size(); ++i) {
      if (cfg.mappings[i].external == defaultName) {
        cfg.default_mapping = i;
      }
    }
    if (!cfg.default_mapping) {
      p.fail(defaultNode, "default \"" + defaultName + "\" names no mapping's external host");
    } else if (defaultName.rfind("*.", 0) == 0) {
      // Allowed: the wildcard mapping then also serves clients without SNI.
    }
  } else if (cfg.mappings.size() == 1) {
    cfg.default_mapping = 0;
  }
}

}  // namespace

std::vector<std::string> keyNames(const std::vector<KeySpec>& specs) {
  std::vector<std::string> out;
  for (const auto& s : specs) {
    out.emplace_back(s.name);
  }
  return out;
}

unsigned Config::effectiveWorkers() const {
  if (workers > 0) {
    return workers;
  }
  long n = sysconf(_SC_NPROCESSORS_ONLN);
  return n <= 0 ? 1 : n > kMaxWorkers ? kMaxWorkers : static_cast<unsigned>(n);
}

bool parseHostPort(const std::string& text, ListenAddress& out) {
  std::size_t colon = text.rfind(':');
  if (colon == std::string::npos || colon + 1 >= text.size()) {
    return false;
  }
  std::string host = text.substr(0, colon);
  if (host.size() >= 2 && host.front() == '[' && host.back() == ']') {
    host = host.substr(1, host.size() - 2);
  } else if (host.find(':') != std::string::npos) {
    return false;  // IPv6 needs brackets
  }
  if (host == "localhost") {
    host = "127.0.0.1";
  } else if (host.empty() || host == "*") {
    host = "0.0.0.0";
  }
  auto port = base::parseUnsigned(text.substr(colon + 1));
  if (!isIpLiteral(host) || !port || *port < 1 || *port > 65535) {
    return false;
  }
  out.address = host;
  out.port = static_cast<std::uint16_t>(*port);
  return true;
}

bool isIpLiteral(const std::string& s) {
  unsigned char buf[sizeof(in6_addr)];
  return inet_pton(AF_INET, s.c_str(), buf) == 1 || inet_pton(AF_INET6, s.c_str(), buf) == 1;
}

bool isValidHostName(const std::string& name) {
  std::string_view n(name);
  if (!n.empty() && n.back() == '.') {
    n.remove_suffix(1);  // a fully qualified name with its root dot
  }
  if (n.empty() || n.size() > 253) {
    return false;
  }
  std::size_t start = 0;
  while (start <= n.size()) {
    std::size_t end = n.find('.', start);
    if (end == std::string_view::npos) {
      end = n.size();
    }
    std::string_view label = n.substr(start, end - start);
    if (label.empty() || label.size() > 63 || label.front() == '-' || label.back() == '-') {
      return false;
    }
    for (char c : label) {
      bool ok = (c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') || (c >= '0' && c <= '9') ||
                c == '-' || c == '_';
      if (!ok) {
        return false;
      }
    }
    start = end + 1;
  }
  return true;
}

base::Result<Config> loadString(const std::string& text, const std::string& name) {
  yaml_parser_t parser;
  if (!yaml_parser_initialize(&parser)) {
    return base::Error{name + ": cannot initialise the YAML parser"};
  }
  yaml_parser_set_input_string(&parser, reinterpret_cast<const unsigned char*>(text.data()),
                               text.size());
  yaml_document_t doc;
  if (!yaml_parser_load(&parser, &doc)) {
    std::string msg = name + ":" + std::to_string(parser.problem_mark.line + 1) + ":" +
                      std::to_string(parser.problem_mark.column + 1) + ": YAML syntax error: " +
                      (parser.problem ? parser.problem : "unknown problem");
    if (parser.context) {
      msg += std::string(" ") + parser.context;
    }
    yaml_parser_delete(&parser);
    return base::Error{msg};
  }
  Config cfg;
  cfg.path = name;
  std::uint64_t h = 1469598103934665603ull;  // FNV-1a: a stable fingerprint, not security
  for (unsigned char c : text) {
    h = (h ^ c) * 1099511628211ull;
  }
  char hex[17];
  std::snprintf(hex, sizeof(hex), "%016llx", static_cast<unsigned long long>(h));
  cfg.hash = hex;
  Parser p(name, &doc);
  yaml_node_t* root = yaml_document_get_root_node(&doc);
  if (!root) {
    yaml_document_delete(&doc);
    yaml_parser_delete(&parser);
    return base::Error{name + ":1:1: the file is empty: it needs at least a \"mappings\" list"};
  }
  parseRoot(p, root, cfg);
  yaml_document_delete(&doc);
  yaml_parser_delete(&parser);
  if (p.failed()) {
    return base::Error{p.errorText()};
  }
  return cfg;
}

base::Result<Config> loadFile(const std::string& path) {
  std::ifstream in(path, std::ios::binary);
  if (!in) {
    return base::Error{"cannot open configuration file \"" + path +
                       "\": " + base::errnoText(errno)};
  }
  // Config files are small; a cap keeps a wrong path (a device, a huge log) from eating memory.
  constexpr std::size_t kMaxConfigBytes = 4 << 20;
  std::string text;
  char buf[65536];
  while (in.read(buf, sizeof(buf)) || in.gcount() > 0) {
    text.append(buf, static_cast<std::size_t>(in.gcount()));
    if (text.size() > kMaxConfigBytes) {
      return base::Error{path + ": configuration file is larger than 4 MiB"};
    }
  }
  return loadString(text, path);
}

}  // namespace pgproxy::config
