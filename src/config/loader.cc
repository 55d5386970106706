// YAML → Config. The only file that includes <yaml.h>.
#include <arpa/inet.h>
#include <openssl/crypto.h>
#include <unistd.h>
#include <yaml.h>

#include <cctype>
#include <cerrno>
#include <cstdio>
#include <cstring>
#include <fstream>
#include <functional>
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
  std::size_t errorCount() const { return errors_.size(); }
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
    return text(n);
  }
  // The text of a node known to be a scalar.
  static std::string text(const yaml_node_t* n) {
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

// admin.console becomes the last `listen` entry, marked: the master binds it, reloads keep it and
// upgrades hand it over like the data ports, and the workers accept on it as the console.
void addConsoleListen(Parser& p, Config& cfg) {
  if (!cfg.admin.console || p.failed()) {
    return;
  }
  const ListenAddress& console = *cfg.admin.console;
  if (cfg.admin.users.empty()) {
    p.fail(console.mark, "admin.console needs admin.users: the users the console lets in");
    return;
  }
  std::vector<ListenAddress> others = cfg.listen;
  if (cfg.admin.enabled) {
    others.push_back(cfg.admin.listen);
  }
  for (const auto& l : others) {
    if (listenAddressesOverlap(console, l)) {
      p.fail(console.mark, "admin.console " + console.address + ":" + std::to_string(console.port) +
                               " overlaps " + l.address + ":" + std::to_string(l.port) +
                               ": the console needs a port of its own");
      return;
    }
  }
  cfg.listen.push_back(console);
}

// A keyword from a fixed set ("balance: least_conn"); the error lists the choices. False (and
// `out` untouched) when the value is not one of them.
template <typename T>
bool parseChoice(Parser& p, yaml_node_t* v, const std::string& what,
                 const std::vector<std::pair<const char*, T>>& choices, T& out) {
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

// ---- The schema ----------------------------------------------------------------------------
//
// Each block of the file (the top level, a mapping, a pool, ...) is one table of keys. A key's
// row is all there is to know about it: its name, whether a reload applies it and its summary
// (the KeySpec that keys.h hands to the reload path and the documentation test), and how its
// value is parsed, checked and stored into what the block builds. The table also makes the list
// of known keys, so an unknown key is refused with the nearest known one suggested. Checks that
// involve several keys of a block run after the block, in its parse function below the table.
//
// So a new key is one row in its block's table, plus its entry in man/pgproxy.yaml.5 and the
// sample file (the unit tests check both). A new block is a table, the row that parses it in its
// parent's table, and one line in keyBlocks().

// Parses one key's value into `D`. `what` names the key in messages ("pool.size").
template <typename D>
using ParseFn = std::function<void(Parser&, yaml_node_t* value, const std::string& what, D&)>;

template <typename D>
struct Key {
  const char* name;
  bool reloadable;
  const char* summary;
  ParseFn<D> parse;
};

// The keys a block had, with their values, for the checks that involve several keys.
class Seen {
 public:
  void add(const std::string& key, yaml_node_t* value, bool ok) {
    entries_.push_back({key, value, ok});
  }
  // The key's value; nullptr when the block does not have the key.
  yaml_node_t* operator[](std::string_view key) const {
    for (const auto& e : entries_) {
      if (e.key == key) {
        return e.value;
      }
    }
    return nullptr;
  }
  // Present, and its value was accepted.
  bool ok(std::string_view key) const {
    for (const auto& e : entries_) {
      if (e.key == key) {
        return e.ok;
      }
    }
    return false;
  }
  // The value of whichever of `keys` comes first in the file; nullptr when none is there.
  yaml_node_t* first(std::initializer_list<std::string_view> keys) const {
    for (const auto& e : entries_) {
      for (auto k : keys) {
        if (e.key == k) {
          return e.value;
        }
      }
    }
    return nullptr;
  }

 private:
  struct Entry {
    std::string key;
    yaml_node_t* value;
    bool ok;
  };
  std::vector<Entry> entries_;
};

template <typename D>
class Block {
 public:
  // `where` names the block in unknown-key errors ("in pool"); `prefix` starts each key's name
  // in errors about its value ("pool." for "pool.size must be ...").
  Block(std::string where, std::string prefix, std::vector<Key<D>> keys)
      : where_(std::move(where)), prefix_(std::move(prefix)), keys_(std::move(keys)) {
    for (const auto& k : keys_) {
      specs_.push_back(KeySpec{k.name, k.reloadable, k.summary});
      names_.emplace_back(k.name);
    }
  }

  const std::vector<KeySpec>& specs() const { return specs_; }

  Seen parse(Parser& p, yaml_node_t* n, D& out) const {
    Seen seen;
    p.forEachKey(n, where_, names_, [&](const std::string& name, yaml_node_t*, yaml_node_t* v) {
      for (const auto& k : keys_) {
        if (name == k.name) {
          std::size_t errors = p.errorCount();
          k.parse(p, v, prefix_ + name, out);
          seen.add(name, v, p.errorCount() == errors);
          return;
        }
      }
    });
    return seen;
  }

 private:
  std::string where_, prefix_;
  std::vector<Key<D>> keys_;
  std::vector<KeySpec> specs_;
  std::vector<std::string> names_;
};

// Bindings for the common kinds of value: each parses the value, reports what is wrong with it,
// and stores it into a field of the block's struct C (or of a struct derived from it). A refused
// value leaves the field as it was: the load fails anyway.

template <typename C>
auto flag(bool C::*field) {
  return [field](Parser& p, yaml_node_t* v, const std::string& what, C& out) {
    out.*field = p.boolean(v, what).value_or(false);
  };
}

template <typename C>
auto text(std::string C::*field) {
  return [field](Parser& p, yaml_node_t* v, const std::string& what, C& out) {
    out.*field = p.scalar(v, what).value_or("");
  };
}

template <typename C>
auto nonEmptyText(std::string C::*field) {
  return [field](Parser& p, yaml_node_t* v, const std::string& what, C& out) {
    auto s = p.scalar(v, what);
    if (s && s->empty()) {
      p.fail(v, what + " must not be empty");
    }
    out.*field = s.value_or("");
  };
}

template <typename C>
auto number(unsigned C::*field, unsigned lo, unsigned hi) {
  return [=](Parser& p, yaml_node_t* v, const std::string& what, C& out) {
    out.*field = boundedNumber(p, v, what, lo, hi).value_or(out.*field);
  };
}

template <typename C>
auto duration(std::uint64_t C::*field) {
  return [field](Parser& p, yaml_node_t* v, const std::string& what, C& out) {
    out.*field = p.duration(v, what).value_or(out.*field);
  };
}

// A duration, or "off" (stored as 0).
template <typename C>
auto durationOrOff(std::uint64_t C::*field) {
  return [field](Parser& p, yaml_node_t* v, const std::string& what, C& out) {
    out.*field = p.durationOrOff(v, what).value_or(out.*field);
  };
}

template <typename C>
auto positiveDuration(std::uint64_t C::*field) {
  return [field](Parser& p, yaml_node_t* v, const std::string& what, C& out) {
    auto ms = p.duration(v, what);
    if (ms && *ms == 0) {
      p.fail(v, what + " must be greater than zero");
    }
    out.*field = ms.value_or(out.*field);
  };
}

template <typename C, typename T>
auto choice(T C::*field, std::vector<std::pair<const char*, T>> choices) {
  return [field, choices](Parser& p, yaml_node_t* v, const std::string& what, C& out) {
    parseChoice(p, v, what, choices, out.*field);
  };
}

// An allow or deny list of the block's access list.
template <typename C>
auto cidrs(net::AccessList C::*field, std::vector<net::Cidr> net::AccessList::*list) {
  return [=](Parser& p, yaml_node_t* v, const std::string& what, C& out) {
    parseCidrs(p, v, what, (out.*field).*list);
  };
}

// A list of names ("users: [a, b]"): each entry a scalar that `valid` accepts, else `rule` says
// what an entry must be. False (after the message) at the first bad entry.
bool parseNameList(Parser& p, yaml_node_t* v, const std::string& what, const char* kind,
                   const char* rule, bool (*valid)(const std::string&),
                   std::vector<std::string>& out) {
  if (v->type != YAML_SEQUENCE_NODE) {
    p.fail(v, what + " must be a list of " + kind + ", not a " + Parser::typeName(v));
    return false;
  }
  for (auto* i = v->data.sequence.items.start; i < v->data.sequence.items.top; ++i) {
    auto name = p.scalar(p.node(*i), what + " entry");
    if (!name) {
      return false;
    }
    if (!valid(*name)) {
      p.fail(p.node(*i), what + " entries are " + rule + ", not \"" + *name + "\"");
      return false;
    }
    out.push_back(*name);
  }
  return true;
}

// ---- listen ----

// A listen entry and whether it can be compared with the others.
struct ListenDraft : ListenAddress {
  bool fine = true;
};

const Block<ListenDraft>& listenBlock() {
  static const Block<ListenDraft> block(
      "listen", "listen.",
      {
          {"address", false, "IP address to bind",
           [](Parser& p, yaml_node_t* v, const std::string& what, ListenDraft& addr) {
             auto s = p.scalar(v, what);
             if (!s) {
               addr.fine = false;
               return;
             }
             std::string a = *s == "*" ? "0.0.0.0" : *s == "localhost" ? "127.0.0.1" : *s;
             if (!isIpLiteral(a)) {
               p.fail(v,
                      "listen.address must be an IP address such as 0.0.0.0, 127.0.0.1 or ::, "
                      "not \"" +
                          *s + "\"");
               addr.fine = false;
             }
             addr.address = a;
           }},
          {"port", false, "TCP port, default 5400",
           [](Parser& p, yaml_node_t* v, const std::string& what, ListenDraft& addr) {
             auto port = p.port(v, what);
             addr.fine = addr.fine && port.has_value();
             addr.port = port.value_or(0);
           }},
          {"proxy_protocol", false,
           "connections start with a PROXY protocol header (v1 or v2) from a load balancer",
           flag(&ListenDraft::proxy_protocol)},
          {"proxy_protocol_from", false,
           "addresses (CIDR) of the load balancers allowed to send PROXY headers",
           [](Parser& p, yaml_node_t* v, const std::string& what, ListenDraft& addr) {
             parseCidrs(p, v, what, addr.proxy_protocol_from);
           }},
      });
  return block;
}

void parseListenEntry(Parser& p, yaml_node_t* n, Config& cfg) {
  ListenDraft addr;
  addr.address = "0.0.0.0";
  addr.mark = Parser::markOf(n);
  listenBlock().parse(p, n, addr);
  if (addr.proxy_protocol != !addr.proxy_protocol_from.empty()) {
    // Trusting every address would let any client claim any address: the balancers are named.
    p.fail(n, addr.proxy_protocol
                  ? "listen.proxy_protocol needs proxy_protocol_from: the addresses of the load "
                    "balancers that send the headers (anyone else could claim any address)"
                  : "listen.proxy_protocol_from is set but proxy_protocol is not");
    addr.fine = false;
  }
  if (addr.fine) {
    for (const auto& other : cfg.listen) {
      if (other == addr) {
        p.fail(n, "duplicate listen address " + addr.address + ":" + std::to_string(addr.port));
        return;
      }
    }
    cfg.listen.push_back(addr);
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

// ---- peers ----

const Block<Peer>& peerBlock() {
  static const Block<Peer> block(
      "peers", "peers.",
      {
          {"id", true, "the peer's instance_id (1..127)", number(&Peer::id, 1, 127)},
          {"address", true, "ADDRESS:PORT of the peer's client listener",
           [](Parser& p, yaml_node_t* v, const std::string& what, Peer& peer) {
             auto s = p.scalar(v, what);
             if (s && !parseHostPort(*s, peer.address)) {
               p.fail(v, what + " must be ADDRESS:PORT such as 10.0.0.2:5400, not \"" + *s + "\"");
             }
           }},
      });
  return block;
}

void parsePeers(Parser& p, yaml_node_t* n, Config& cfg) {
  if (n->type != YAML_SEQUENCE_NODE) {
    p.fail(n, "peers must be a list of {id, address}");
    return;
  }
  for (auto* i = n->data.sequence.items.start; i < n->data.sequence.items.top; ++i) {
    yaml_node_t* item = p.node(*i);
    Peer peer;
    peer.mark = Parser::markOf(item);
    Seen seen = peerBlock().parse(p, item, peer);
    if (!seen["id"] || !seen["address"]) {
      p.fail(item, "each of peers needs id and address");
      continue;
    }
    for (const Peer& other : cfg.peers) {
      if (other.id == peer.id) {
        p.fail(item, "peers has id " + std::to_string(peer.id) + " twice");
      }
    }
    cfg.peers.push_back(peer);
  }
}

// ---- connection_rate ----

const Block<Rate>& rateBlock() {
  static const Block<Rate> block(
      "connection_rate", "connection_rate.",
      {
          {"per_client", true, "sessions per second (20/s) or minute (100/m) from one address",
           [](Parser& p, yaml_node_t* v, const std::string& what, Rate& out) {
             parseRateText(p, v, what, out);
           }},
          {"burst", true, "sessions allowed at once above the rate; default the rate's number",
           number(&Rate::burst, 1, 1'000'000)},
      });
  return block;
}

// {per_client: 20/s, burst: 40}, or just the rate.
void parseRate(Parser& p, yaml_node_t* n, Rate& out) {
  if (n->type == YAML_SCALAR_NODE) {
    parseRateText(p, n, "connection_rate", out);
  } else {
    rateBlock().parse(p, n, out);
    if (n->type == YAML_MAPPING_NODE && !out.enabled() && !p.failed()) {
      p.fail(n, "connection_rate needs per_client, for example {per_client: 20/s, burst: 40}");
    }
  }
  if (out.burst == 0) {
    out.burst = out.count;
  }
}

// ---- tcp_keepalive ----

// A probe time in whole seconds, as the kernel takes it.
auto probeSeconds(std::uint32_t KeepAlive::*field) {
  return [field](Parser& p, yaml_node_t* v, const std::string& what, KeepAlive& out) {
    auto ms = p.duration(v, what);
    if (ms && (*ms < 1000 || *ms > 32767 * 1000ull)) {
      p.fail(v, what + " must be from 1s to 32767s (whole seconds)");
      return;
    }
    out.*field = static_cast<std::uint32_t>(ms.value_or(0) / 1000);
  };
}

const Block<KeepAlive>& keepAliveBlock() {
  static const Block<KeepAlive> block(
      "tcp_keepalive", "tcp_keepalive.",
      {
          {"idle", true, "idle time before the first probe (TCP_KEEPIDLE)",
           probeSeconds(&KeepAlive::idle_s)},
          {"interval", true, "time between probes (TCP_KEEPINTVL)",
           probeSeconds(&KeepAlive::interval_s)},
          {"count", true, "unanswered probes before the peer is dead (TCP_KEEPCNT)",
           number(&KeepAlive::count, 1, 127)},
      });
  return block;
}

void parseKeepAlive(Parser& p, yaml_node_t* n, KeepAlive& out) {
  if (n->type == YAML_SCALAR_NODE) {
    // "off" (or "on": the kernel's settings).
    out.enabled = p.boolean(n, "tcp_keepalive").value_or(true);
    return;
  }
  keepAliveBlock().parse(p, n, out);
}

// ---- backends ----

// A backend of a group, whether it has a host, and whether its values were all accepted.
struct BackendDraft : Backend {
  bool haveHost = false;
  bool fine = true;
};

const Block<BackendDraft>& backendBlock() {
  static const Block<BackendDraft> block(
      "a backend", "",
      {
          {"host", true, "backend PostgreSQL host name or IP address",
           [](Parser& p, yaml_node_t* v, const std::string& what, BackendDraft& be) {
             auto s = p.scalar(v, what);
             be.haveHost = s.has_value();
             be.host = s.value_or("");
             if (s && !isValidHostName(*s) && !isIpLiteral(*s)) {
               p.fail(v, "backend host \"" + *s + "\" is not a valid host name or IP address");
               be.fine = false;
             }
           }},
          {"port", true, "backend port, default 5432",
           [](Parser& p, yaml_node_t* v, const std::string&, BackendDraft& be) {
             auto port = p.port(v, "backend port");
             be.fine = be.fine && port.has_value();
             be.port = port.value_or(0);
           }},
          {"weight", true, "share of new sessions for round_robin and random, default 1",
           [](Parser& p, yaml_node_t* v, const std::string& what, BackendDraft& be) {
             auto w = boundedNumber(p, v, what, 1, 1000);
             be.fine = be.fine && w.has_value();
             be.weight = w.value_or(1);
           }},
      });
  return block;
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
    BackendDraft be;
    be.mark = Parser::markOf(b);
    backendBlock().parse(p, b, be);
    fine = fine && be.fine;
    if (b->type != YAML_MAPPING_NODE) {
      fine = false;
      continue;
    }
    if (!be.haveHost) {
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

// ---- health_check ----

const Block<HealthCheck>& healthCheckBlock() {
  static const Block<HealthCheck> block(
      "health_check", "health_check.",
      {
          {"interval", true, "time between checks of each backend, default 2s",
           positiveDuration(&HealthCheck::interval_ms)},
          {"timeout", true, "time a check may take, default 1s",
           positiveDuration(&HealthCheck::timeout_ms)},
          {"fall", true, "consecutive failures before a backend is down, default 3",
           number(&HealthCheck::fall, 1, 100)},
          {"rise", true, "consecutive successes before it is up again, default 2",
           number(&HealthCheck::rise, 1, 100)},
          {"user", true, "log in as this user and check pg_is_in_recovery() (needed for role)",
           nonEmptyText(&HealthCheck::user)},
          {"password_file", true, "file holding the health-check user's password",
           nonEmptyText(&HealthCheck::password_file)},
          {"database", true, "database the health-check user logs in to, default postgres",
           nonEmptyText(&HealthCheck::database)},
      });
  return block;
}

// ---- pool ----

// Server connections per pool: bounded so that a typo cannot ask one worker for more sockets
// than a process can hold.
constexpr unsigned kMaxPoolSize = 10'000;

const Block<PoolConfig>& poolBlock() {
  static const Block<PoolConfig> block(
      "pool", "pool.",
      {
          {"mode", true, "session (default), transaction or statement: when a server goes back",
           choice(&PoolConfig::mode, {{"session", PoolMode::kSession},
                                      {"transaction", PoolMode::kTransaction},
                                      {"statement", PoolMode::kStatement}})},
          {"size", true, "server connections per (backend, user, database), default 20",
           number(&PoolConfig::size, 1, kMaxPoolSize)},
          {"min_size", true, "server connections kept open and warm, default 0",
           number(&PoolConfig::min_size, 0, kMaxPoolSize)},
          {"reserve_size", true, "extra server connections for clients that waited reserve_timeout",
           number(&PoolConfig::reserve_size, 0, kMaxPoolSize)},
          {"reserve_timeout", true,
           "wait before a client may take a reserve connection, default 5s",
           duration(&PoolConfig::reserve_timeout_ms)},
          {"max_db_connections", true, "server connections per (backend, database); default no cap",
           number(&PoolConfig::max_db_connections, 0, 1'000'000)},
          {"query_wait_timeout", true, "longest wait for a server connection, default 2m",
           durationOrOff(&PoolConfig::query_wait_timeout_ms)},
          {"server_idle_timeout", true, "close server connections idle this long, default 10m",
           durationOrOff(&PoolConfig::server_idle_timeout_ms)},
          {"server_lifetime", true, "close server connections this old when released, default 1h",
           durationOrOff(&PoolConfig::server_lifetime_ms)},
          // Empty SQL is meaningful for both: no reset, an empty query as the check.
          {"server_reset_query", true, "run on release in session mode, default DISCARD ALL",
           text(&PoolConfig::server_reset_query)},
          {"server_check_query", true, "run before reusing a server idle for server_check_delay",
           text(&PoolConfig::server_check_query)},
          // No "off": 0 means checking before every reuse, the opposite of off.
          {"server_check_delay", true, "idle time after which a server is checked, default 30s",
           duration(&PoolConfig::server_check_delay_ms)},
          {"prepared_statements", true,
           "named prepared statements kept per server connection (transaction and statement "
           "modes), default 200, 0 = not tracked",
           number(&PoolConfig::prepared_statements, 0, 100'000)},
      });
  return block;
}

void parsePool(Parser& p, yaml_node_t* n, PoolConfig& pool) {
  pool.enabled = true;
  pool.mark = Parser::markOf(n);
  Seen seen = poolBlock().parse(p, n, pool);
  // Against a size that was itself refused, the comparison would only add a confusing error.
  bool sizeOk = !seen["size"] || seen.ok("size");
  if (seen.ok("min_size") && sizeOk && pool.min_size > pool.size) {
    p.fail(seen["min_size"], "pool.min_size (" + std::to_string(pool.min_size) +
                                 ") must not be more than pool.size (" + std::to_string(pool.size) +
                                 ")");
  }
}

// ---- routes ----

// A route and the backends it names, merged into its mapping's list once the whole mapping is
// read (its own backends may come after its routes in the file).
struct RouteDraft : Route {
  std::vector<Backend> servers;
  bool fine = true;
};

// At most this many routes per mapping: each session walks them in order.
constexpr std::size_t kMaxRoutes = 100;

const Block<RouteMatch>& routeMatchBlock() {
  static const Block<RouteMatch> block(
      "match", "match.",
      {
          {"database", true, "glob the database the client asks for must match",
           text(&RouteMatch::database)},
          {"user", true, "glob the client's user name must match", text(&RouteMatch::user)},
          {"application_name", true, "glob the client's application_name must match",
           text(&RouteMatch::application_name)},
      });
  return block;
}

const Block<RouteDraft>& routeBlock() {
  static const Block<RouteDraft> block(
      "a route", "routes.",
      {
          {"match", true, "database, user, application_name: glob patterns, all must match",
           [](Parser& p, yaml_node_t* v, const std::string& what, RouteDraft& r) {
             if (v->type != YAML_MAPPING_NODE) {
               p.fail(v, what + " must be a mapping of database, user, application_name");
               r.fine = false;
               return;
             }
             routeMatchBlock().parse(p, v, r.match);
           }},
          {"backends", true, "list of {host, port, weight}; default the mapping's own",
           [](Parser& p, yaml_node_t* v, const std::string&, RouteDraft& r) {
             Mapping group;
             r.fine = parseBackends(p, v, group) && r.fine;
             r.servers = std::move(group.backends);
           }},
          {"role", true, "any, primary or standby: replaces the mapping's role",
           [](Parser& p, yaml_node_t* v, const std::string& what, RouteDraft& r) {
             r.has_role = parseChoice(p, v, what,
                                      std::vector<std::pair<const char*, BackendRole>>{
                                          {"any", BackendRole::kAny},
                                          {"primary", BackendRole::kPrimary},
                                          {"standby", BackendRole::kStandby}},
                                      r.role);
             r.fine = r.fine && r.has_role;
           }},
          {"database", true, "database name sent to the backend instead of the client's",
           nonEmptyText(&Route::database)},
      });
  return block;
}

// ---- mappings ----

// A mapping, which of the keys that give its backends it has, and whether it is sound enough to
// be compared with the other mappings.
struct MappingDraft : Mapping {
  bool haveExternal = false, haveInternal = false, havePort = false, haveBackends = false;
  bool fine = true;
  std::vector<RouteDraft> route_drafts;
};

void parseRoutes(Parser& p, yaml_node_t* n, MappingDraft& m) {
  if (n->type != YAML_SEQUENCE_NODE || n->data.sequence.items.start == n->data.sequence.items.top) {
    p.fail(n, "routes must be a non-empty list of {match, backends, role, database}");
    m.fine = false;
    return;
  }
  if (static_cast<std::size_t>(n->data.sequence.items.top - n->data.sequence.items.start) >
      kMaxRoutes) {
    p.fail(n, "a mapping may have at most " + std::to_string(kMaxRoutes) + " routes");
    m.fine = false;
    return;
  }
  for (auto* i = n->data.sequence.items.start; i < n->data.sequence.items.top; ++i) {
    yaml_node_t* r = p.node(*i);
    RouteDraft route;
    route.mark = Parser::markOf(r);
    routeBlock().parse(p, r, route);
    m.fine = m.fine && route.fine && r->type == YAML_MAPPING_NODE;
    m.route_drafts.push_back(std::move(route));
  }
}

// Gives each route the indexes of its backends in the mapping's list, appending the ones the
// mapping does not have yet: one slot per host:port however many routes name it, so health,
// session counts and pools are per server.
bool mergeRoutes(Parser& p, yaml_node_t* n, MappingDraft& m) {
  m.own_backends = m.backends.size();
  for (auto& draft : m.route_drafts) {
    Route route = draft;  // the Route part
    for (const auto& be : draft.servers) {
      std::size_t index = m.backends.size();
      for (std::size_t i = 0; i < m.backends.size(); ++i) {
        if (m.backends[i].key() == be.key()) {
          index = i;
        }
      }
      if (index == m.backends.size()) {
        m.backends.push_back(be);
      } else if (m.backends[index].weight != be.weight) {
        p.fail(n, "backend " + be.key() + " of the route at line " +
                      std::to_string(draft.mark.line) + " has weight " + std::to_string(be.weight) +
                      " but " + std::to_string(m.backends[index].weight) + " where line " +
                      std::to_string(m.backends[index].mark.line) + " names it");
        return false;
      }
      route.backends.push_back(index);
    }
    if (route.backends.empty() && m.own_backends == 0) {
      p.fail(n, "the route at line " + std::to_string(draft.mark.line) + " of mapping \"" +
                    m.external + "\" has no backends, and the mapping has none of its own");
      return false;
    }
    if (route.role != BackendRole::kAny && m.health.user.empty()) {
      p.fail(n, "the route at line " + std::to_string(draft.mark.line) +
                    " sets role, which needs the mapping's health_check.user (the check logs in "
                    "to ask pg_is_in_recovery())");
      return false;
    }
    m.routes.push_back(std::move(route));
  }
  if (m.backends.size() > 64) {
    p.fail(n, "mapping \"" + m.external + "\" and its routes name " +
                  std::to_string(m.backends.size()) + " backends, at most 64");
    return false;
  }
  if (!m.routes.empty() && m.tls == TlsMode::kPassthrough && m.own_backends == 0) {
    p.fail(n, "mapping \"" + m.external +
                  "\" is tls: passthrough and has only routes: a passthrough session's "
                  "StartupMessage is encrypted for the backend, so it needs the mapping's own "
                  "backends (internal or backends), or tls: terminate");
    return false;
  }
  return true;
}

// A binding whose refused value also keeps the mapping out of the list, so that a mapping with
// a broken name or backend is not compared with the ones that follow (the duplicate-name check
// would only add noise). The rows that do not use it (health_check, allow, deny,
// connection_rate, authenticate, pool) never did: their mistakes leave the mapping in the list,
// which changes nothing but that check, as the load fails either way.
template <typename Fn>
auto orDrop(Fn fn) {
  return [fn](Parser& p, yaml_node_t* v, const std::string& what, MappingDraft& m) {
    std::size_t errors = p.errorCount();
    fn(p, v, what, m);
    m.fine = m.fine && p.errorCount() == errors;
  };
}

// certificate, key, backend_ca, backend_sni: a path or name that must not be empty.
auto mappingText(std::string Mapping::*field) {
  return [field](Parser& p, yaml_node_t* v, const std::string& what, MappingDraft& m) {
    auto s = p.scalar(v, what);
    if (!s || s->empty()) {
      if (s) {
        p.fail(v, what + " must not be empty");
      }
      m.fine = false;
      return;
    }
    m.*field = *s;
  };
}

const Block<MappingDraft>& mappingBlock() {
  static const Block<MappingDraft> block(
      "a mapping", "",
      {
          {"external", true, "host name clients connect to (SNI); *.domain wildcards allowed",
           [](Parser& p, yaml_node_t* v, const std::string& what, MappingDraft& m) {
             auto s = p.scalar(v, what);
             if (!s) {
               m.fine = false;
               return;
             }
             m.haveExternal = true;
             m.external = base::toLowerAscii(*s);
             std::string host = m.external.rfind("*.", 0) == 0 ? m.external.substr(2) : m.external;
             if (m.external.empty()) {
               p.fail(v, "external must not be empty");
               m.fine = false;
             } else if (!isValidHostName(host) || isIpLiteral(host)) {
               p.fail(v, "external \"" + *s +
                             "\" is not a valid host name (a wildcard is allowed only as a "
                             "whole leading label: *.example.com)");
               m.fine = false;
             }
           }},
          {"internal", true, "backend PostgreSQL host (shorthand for one backend)",
           [](Parser& p, yaml_node_t* v, const std::string& what, MappingDraft& m) {
             auto s = p.scalar(v, what);
             if (!s) {
               m.fine = false;
               return;
             }
             m.haveInternal = true;
             m.internal = *s;
             // "$1" (a wildcard mapping's label) is checked as a label would be; parseMapping
             // checks that the mapping is a wildcard.
             m.templated = s->find("$1") != std::string::npos;
             std::string host = *s;
             for (std::size_t at; (at = host.find("$1")) != std::string::npos;) {
               host.replace(at, 2, "x");
             }
             if (!isValidHostName(host) && !isIpLiteral(*s)) {
               p.fail(v, "internal \"" + *s + "\" is not a valid host name or IP address");
               m.fine = false;
             }
           }},
          {"port", true, "backend port, default 5432",
           orDrop([](Parser& p, yaml_node_t* v, const std::string& what, MappingDraft& m) {
             m.havePort = true;
             m.port = p.port(v, what).value_or(0);
           })},
          {"backends", true, "list of {host, port, weight}: a backend group",
           [](Parser& p, yaml_node_t* v, const std::string&, MappingDraft& m) {
             m.haveBackends = true;
             m.fine = parseBackends(p, v, m) && m.fine;
           }},
          {"balance", true, "round_robin (default), least_conn, random or first",
           orDrop(choice(&Mapping::balance, {{"round_robin", Balance::kRoundRobin},
                                             {"least_conn", Balance::kLeastConn},
                                             {"random", Balance::kRandom},
                                             {"first", Balance::kFirst}}))},
          {"health_check", true, "active checks: interval, timeout, fall, rise, user",
           [](Parser& p, yaml_node_t* v, const std::string&, MappingDraft& m) {
             m.health.enabled = true;
             healthCheckBlock().parse(p, v, m.health);
           }},
          {"role", true, "any (default), primary or standby: which servers take sessions",
           orDrop(choice(&Mapping::role, {{"any", BackendRole::kAny},
                                          {"primary", BackendRole::kPrimary},
                                          {"standby", BackendRole::kStandby}}))},
          {"allow", true, "client addresses (CIDR) admitted to this mapping",
           cidrs(&Mapping::access, &net::AccessList::allow)},
          {"deny", true, "client addresses (CIDR) refused for this mapping",
           cidrs(&Mapping::access, &net::AccessList::deny)},
          {"max_connections", true, "client sessions at once for this mapping (53300 beyond)",
           orDrop(number(&Mapping::max_connections, 1, 1'000'000))},
          {"connection_rate", true, "new sessions per client address for this mapping",
           [](Parser& p, yaml_node_t* v, const std::string&, MappingDraft& m) {
             parseRate(p, v, m.connection_rate);
           }},
          {"tls", true, "passthrough (default) or terminate",
           orDrop(choice(&Mapping::tls, {{"passthrough", TlsMode::kPassthrough},
                                         {"terminate", TlsMode::kTerminate}}))},
          {"certificate", true, "certificate chain served for this mapping (terminate)",
           mappingText(&Mapping::certificate)},
          {"key", true, "private key of the mapping's certificate", mappingText(&Mapping::key)},
          {"backend_tls", true, "disable, require (default), verify-ca or verify-full",
           orDrop(choice(&Mapping::backend_tls, {{"disable", BackendTls::kDisable},
                                                 {"require", BackendTls::kRequire},
                                                 {"verify-ca", BackendTls::kVerifyCa},
                                                 {"verify-full", BackendTls::kVerifyFull}}))},
          {"backend_ca", true, "CA file that verifies the backend's certificate",
           mappingText(&Mapping::backend_ca)},
          {"backend_sni", true, "server name sent to and verified against the backend",
           mappingText(&Mapping::backend_sni)},
          {"authenticate", true, "pgproxy authenticates clients (auth) and logs in for them",
           flag(&Mapping::authenticate)},
          {"pool", true, "pool server connections for authenticated clients: mode, size, ...",
           [](Parser& p, yaml_node_t* v, const std::string&, MappingDraft& m) {
             parsePool(p, v, m.pool);
           }},
          {"backend_proxy_protocol", true,
           "v2: connections to the backends start with a PROXY protocol v2 header; off",
           choice(&Mapping::backend_proxy_protocol, {{"v2", true}, {"off", false}})},
          {"splice", true, "passthrough sessions: kernel, user or auto (the global splice)",
           choice(&Mapping::splice, {{"kernel", SpliceMode::kKernel},
                                     {"user", SpliceMode::kUser},
                                     {"auto", SpliceMode::kAuto}})},
          {"read_write_split", true,
           "send transactions that only read to standbys: true, false or optimistic (pooled)",
           [](Parser& p, yaml_node_t* v, const std::string& what, MappingDraft& m) {
             auto s = p.scalar(v, what);
             std::string word = base::toLowerAscii(s.value_or(""));
             if (word == "optimistic") {
               m.read_write_split = m.read_write_optimistic = true;
             } else if (word == "true" || word == "yes" || word == "on") {
               m.read_write_split = true;
             } else if (s && word != "false" && word != "no" && word != "off") {
               p.fail(v, what + " must be true, false or optimistic, not \"" + *s + "\"");
             }
           }},
          {"read_only_functions", true, "functions a read may call besides the built-in ones",
           [](Parser& p, yaml_node_t* v, const std::string& what, MappingDraft& m) {
             parseNameList(
                 p, v, what, "function names", "function names (name or schema.name)",
                 [](const std::string& name) {
                   bool ok = !name.empty() && name.size() <= 127;
                   for (char c : name) {
                     ok = ok &&
                          (std::isalnum(static_cast<unsigned char>(c)) || c == '_' || c == '.');
                   }
                   return ok;
                 },
                 m.read_only_functions);
           }},
          {"read_after_write", true, "after a write a client reads from the primary this long",
           durationOrOff(&Mapping::read_after_write_ms)},
          {"max_replica_lag", true, "standbys further behind the primary take no reads",
           durationOrOff(&Mapping::max_replica_lag_ms)},
          {"routes", true, "route by database, user, application_name: match, backends, role",
           [](Parser& p, yaml_node_t* v, const std::string&, MappingDraft& m) {
             parseRoutes(p, v, m);
           }},
      });
  return block;
}

void parseMapping(Parser& p, yaml_node_t* n, Config& cfg) {
  MappingDraft m;
  m.mark = Parser::markOf(n);
  Seen seen = mappingBlock().parse(p, n, m);
  if (n->type != YAML_MAPPING_NODE) {
    return;
  }
  if (m.role != BackendRole::kAny && m.health.user.empty()) {
    p.fail(n, "mapping \"" + m.external +
                  "\" sets role, which needs health_check.user (the check logs in to ask "
                  "pg_is_in_recovery())");
    m.fine = false;
  }
  if (!m.health.password_file.empty() && m.health.user.empty()) {
    p.fail(n, "health_check.password_file needs health_check.user");
    m.fine = false;
  }
  if (m.pool.enabled) {
    if (seen["authenticate"] && !m.authenticate) {
      p.fail(n, "mapping \"" + m.external +
                    "\" has a pool but authenticate: false: pgproxy authenticates the clients of "
                    "a pool itself (leave authenticate out)");
      m.fine = false;
    }
    m.authenticate = true;
  }
  if (m.certificate.empty() != m.key.empty()) {
    p.fail(n, "mapping \"" + m.external + "\" needs both certificate and key, or neither");
    m.fine = false;
  }
  if (m.tls == TlsMode::kPassthrough &&
      (!m.certificate.empty() || !m.backend_ca.empty() || !m.backend_sni.empty())) {
    p.fail(n, "mapping \"" + m.external +
                  "\" sets certificate/backend_ca/backend_sni but is not tls: terminate "
                  "(passthrough sessions are encrypted end to end by the backend)");
    m.fine = false;
  }
  if (m.splice == SpliceMode::kKernel && (m.tls != TlsMode::kPassthrough || m.authenticate)) {
    p.fail(n, "mapping \"" + m.external +
                  "\" has splice: kernel, which only TLS passthrough sessions use (this mapping " +
                  (m.authenticate ? "authenticates its clients" : "terminates TLS") + ")");
    m.fine = false;
  }
  if (!m.haveExternal) {
    p.fail(n, "mapping has no \"external\" host name");
    m.fine = false;
  }
  if (m.haveBackends && (m.haveInternal || m.havePort)) {
    p.fail(n, "mapping \"" + m.external +
                  "\" sets both internal/port and backends: use one or the other");
    m.fine = false;
  } else if (!m.haveInternal && !m.haveBackends && m.route_drafts.empty()) {
    p.fail(n, "mapping has no \"internal\" host (or \"backends\" list, or \"routes\")");
    m.fine = false;
  }
  if (m.read_write_split) {
    const char* why = !m.pool.enabled ? "has no pool (the split is per transaction)"
                      : m.pool.mode == PoolMode::kSession
                          ? "pools in session mode (a session keeps one server)"
                      : m.health.user.empty()
                          ? "has no health_check.user (the check tells primaries from standbys)"
                      : m.role != BackendRole::kAny ? "sets role (the split chooses the role)"
                      : m.read_write_optimistic && m.pool.mode != PoolMode::kTransaction
                          ? "is optimistic without transaction pooling (statement mode has no "
                            "explicit transactions to try)"
                          : nullptr;
    if (why) {
      p.fail(n, "mapping \"" + m.external + "\" sets read_write_split but " + why);
      m.fine = false;
    }
  } else if (!m.read_only_functions.empty() || seen["read_after_write"]) {
    p.fail(n, "mapping \"" + m.external +
                  "\" sets read_only_functions or read_after_write, which only a "
                  "read_write_split mapping uses");
    m.fine = false;
  }
  if (m.max_replica_lag_ms > 0 && m.health.user.empty()) {
    p.fail(n, "mapping \"" + m.external +
                  "\" sets max_replica_lag, which needs health_check.user (the check logs in to "
                  "read each standby's lag)");
    m.fine = false;
  }
  m.read_only = std::make_shared<const sql::ReadOnlyFunctions>(m.read_only_functions);
  if (m.templated) {
    const char* why = m.external.rfind("*.", 0) != 0 ? "is not a wildcard (*.domain)"
                      : m.pool.enabled               ? "has a pool (pools are per server)"
                      : m.health.enabled ? "has health_check (a template names no one server)"
                                         : nullptr;
    if (why) {
      p.fail(n, "mapping \"" + m.external + "\" names its internal host with $1 but " + why);
      m.fine = false;
    }
  }
  if (!m.fine) {
    return;
  }
  if (m.haveBackends) {
    m.internal = m.backends.front().host;
    m.port = m.backends.front().port;
  } else if (m.haveInternal) {
    m.backends.push_back(Backend{m.internal, m.port, 1, m.mark});
  }
  if (!mergeRoutes(p, n, m)) {
    return;
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

// ---- admin ----

const Block<AdminConfig>& adminBlock() {
  static const Block<AdminConfig> block(
      "admin", "admin.",
      {
          {"listen", true, "address:port of the admin HTTP listener",
           [](Parser& p, yaml_node_t* v, const std::string& what, AdminConfig& admin) {
             auto s = p.scalar(v, what);
             if (!s) {
               return;
             }
             if (!parseHostPort(*s, admin.listen)) {
               p.fail(v, "admin.listen must be ADDRESS:PORT such as 127.0.0.1:9540, not \"" + *s +
                             "\"");
               return;
             }
             admin.listen.mark = Parser::markOf(v);
             admin.enabled = true;
           }},
          {"token", true, "bearer token required on every admin request",
           [](Parser& p, yaml_node_t* v, const std::string& what, AdminConfig& admin) {
             auto s = p.scalar(v, what);
             if (!s) {
               return;
             }
             if (s->empty()) {
               p.fail(v, "admin.token must not be empty (leave it out to disable it)");
             }
             if (!admin.token.empty()) {
               p.fail(v, "admin.token and admin.token_file are both set: keep one");
             }
             admin.token = *s;
           }},
          {"token_file", true, "file holding the bearer token (first line), read at load",
           [](Parser& p, yaml_node_t* v, const std::string& what, AdminConfig& admin) {
             auto s = p.scalar(v, what);
             if (!s) {
               return;
             }
             std::ifstream in(*s, std::ios::binary);
             if (!in) {
               p.fail(v, "cannot read admin.token_file \"" + *s + "\": " + std::strerror(errno));
               return;
             }
             std::string token;
             std::getline(in, token);
             if (!token.empty() && token.back() == '\r') {
               token.pop_back();
             }
             if (token.size() > 4096) {
               p.fail(v, "admin.token_file " + *s + ": the token is longer than 4096 bytes");
               return;
             }
             if (token.empty()) {
               p.fail(v, "admin.token_file " + *s + " holds no token on its first line");
               return;
             }
             if (!admin.token.empty()) {
               p.fail(v, "admin.token and admin.token_file are both set: keep one");
             }
             admin.token = token;
           }},
          {"console", true, "address:port where every connection is the psql console",
           [](Parser& p, yaml_node_t* v, const std::string& what, AdminConfig& admin) {
             auto s = p.scalar(v, what);
             if (!s) {
               return;
             }
             ListenAddress addr;
             if (!parseHostPort(*s, addr)) {
               p.fail(v, "admin.console must be ADDRESS:PORT such as 127.0.0.1:9541, not \"" + *s +
                             "\"");
               return;
             }
             addr.mark = Parser::markOf(v);
             addr.console = true;
             admin.console = addr;
           }},
          {"certificate", true, "certificate chain (PEM) for HTTPS on admin.listen",
           nonEmptyText(&AdminConfig::certificate)},
          {"key", true, "private key (PEM) of admin.certificate", nonEmptyText(&AdminConfig::key)},
          {"allow_config_write", true, "let PUT /api/v1/config replace the file and reload",
           flag(&AdminConfig::allow_config_write)},
          {"users", true, "users allowed on the psql console (the virtual database pgproxy)",
           [](Parser& p, yaml_node_t* v, const std::string& what, AdminConfig& admin) {
             if (!parseNameList(
                     p, v, what, "user names", "PostgreSQL user names (1 to 63 bytes)",
                     [](const std::string& name) { return !name.empty() && name.size() <= 63; },
                     admin.users)) {
               return;
             }
             if (admin.users.empty()) {
               p.fail(v, what +
                             " must name at least one user (leave it out to turn the "
                             "console off)");
             }
           }},
      });
  return block;
}

void parseAdmin(Parser& p, yaml_node_t* n, Config& cfg) {
  adminBlock().parse(p, n, cfg.admin);
  if (cfg.admin.certificate.empty() != cfg.admin.key.empty() && !p.failed()) {
    p.fail(n, "admin.certificate and admin.key go together: set both for HTTPS, or neither");
  }
  // The console on the data listener needs no admin listener: users alone are enough.
  if (n->type == YAML_MAPPING_NODE && !cfg.admin.enabled && cfg.admin.users.empty() &&
      !p.failed()) {
    p.fail(n, "admin needs a \"listen\" address, such as 127.0.0.1:9540, or console \"users\"");
  }
}

// ---- tls ----

const Block<TlsConfig>& tlsBlock() {
  static const Block<TlsConfig> block(
      "tls", "tls.",
      {
          {"min_version", true, "lowest TLS version offered to clients: 1.2 or 1.3",
           [](Parser& p, yaml_node_t* v, const std::string& what, TlsConfig& tls) {
             auto s = p.scalar(v, what);
             if (!s) {
               return;
             }
             if (*s != "1.2" && *s != "1.3") {
               p.fail(v, "tls.min_version must be \"1.2\" or \"1.3\", not \"" + *s + "\"");
             }
             tls.min_version = *s;
           }},
          {"ciphers", true, "TLS 1.2 cipher list (OpenSSL syntax)", text(&TlsConfig::ciphers)},
          {"ciphersuites", true, "TLS 1.3 cipher suites (OpenSSL syntax)",
           text(&TlsConfig::ciphersuites)},
          {"certificate", true, "default certificate chain for terminate mappings",
           text(&TlsConfig::certificate)},
          {"key", true, "private key of the default certificate", text(&TlsConfig::key)},
          {"require", true, "refuse clients that do not use TLS", flag(&TlsConfig::require)},
      });
  return block;
}

void parseTls(Parser& p, yaml_node_t* n, Config& cfg) {
  tlsBlock().parse(p, n, cfg.tls);
  if (cfg.tls.certificate.empty() != cfg.tls.key.empty()) {
    p.fail(n, "tls needs both certificate and key, or neither");
  }
}

// ---- auth ----

const Block<AuthConfig>& authBlock() {
  static const Block<AuthConfig> block(
      "auth", "auth.",
      {
          {"type", true, "scram-sha-256 (default), md5, trust or cert",
           [](Parser& p, yaml_node_t* v, const std::string& what, AuthConfig& auth) {
             parseChoice<auth::ClientAuthType>(
                 p, v, what,
                 {{"scram-sha-256", auth::ClientAuthType::kScramSha256},
                  {"md5", auth::ClientAuthType::kMd5},
                  {"trust", auth::ClientAuthType::kTrust},
                  {"cert", auth::ClientAuthType::kCert}},
                 auth.type);
           }},
          {"file", true, "auth file: one \"user\" \"secret\" line per user (PgBouncer's format)",
           text(&AuthConfig::file)},
          {"client_ca", true, "type cert: CA file (PEM) the client certificates must chain to",
           nonEmptyText(&AuthConfig::client_ca)},
          {"query", true, "auth_query: SQL that returns the secret of a user not in the file",
           nonEmptyText(&AuthConfig::query)},
          {"user", true, "user (in the auth file) that runs auth.query",
           nonEmptyText(&AuthConfig::query_user)},
          {"database", true, "database auth.query runs in, default postgres",
           nonEmptyText(&AuthConfig::query_database)},
          {"cache", true, "how long a secret auth.query returned is trusted, default 60s",
           duration(&AuthConfig::cache_ms)},
      });
  return block;
}

void parseAuth(Parser& p, yaml_node_t* n, Config& cfg) {
  cfg.auth.configured = true;
  cfg.auth.mark = Parser::markOf(n);
  Seen seen = authBlock().parse(p, n, cfg.auth);
  if (p.failed()) {
    return;
  }
  yaml_node_t* fileNode = seen["file"] ? seen["file"] : n;
  yaml_node_t* userNode = seen["user"];
  if (yaml_node_t* queryOnly = seen.first({"user", "database", "cache"});
      queryOnly && !seen["query"]) {
    p.fail(queryOnly,
           "auth.user, auth.database and auth.cache configure auth.query, which is not set");
    return;
  }
  if (seen["query"] && !userNode) {
    p.fail(seen["query"],
           "auth.query needs auth.user: the user pgproxy logs in as to run it (its secret "
           "must be in auth.file)");
    return;
  }
  const bool cert = cfg.auth.type == auth::ClientAuthType::kCert;
  if (cert && !seen["client_ca"]) {
    p.fail(seen["type"] ? seen["type"] : n,
           "auth.type cert needs auth.client_ca: the CA file client certificates must chain to");
    return;
  }
  if (!cert && seen["client_ca"]) {
    p.fail(seen["client_ca"], "auth.client_ca is for auth.type cert only (the type is not cert)");
    return;
  }
  if (cert && access(cfg.auth.client_ca.c_str(), R_OK) != 0) {
    // The TLS contexts load it at start, -t and reload; this names the line.
    p.fail(seen["client_ca"],
           "cannot read auth.client_ca \"" + cfg.auth.client_ca + "\": " + std::strerror(errno));
    return;
  }
  if (cfg.auth.file.empty()) {
    if (cfg.auth.type != auth::ClientAuthType::kTrust && !cert) {
      p.fail(n,
             "auth needs a \"file\" of users and secrets (only types trust and cert work "
             "without one)");
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
  if (const auth::UserSecret* secret = userNode ? users->find(cfg.auth.query_user) : nullptr;
      secret && secret->kind == auth::UserSecret::Kind::kScram) {
    // A verifier checks a password; it cannot give one. Logging in with it would fail at every
    // lookup, so say it now.
    p.fail(userNode, "auth.user \"" + cfg.auth.query_user +
                         "\" has a SCRAM verifier in auth.file \"" + cfg.auth.file +
                         "\": pgproxy logs in as it to run auth.query and needs its password "
                         "(or, for an md5 backend, its md5 hash)");
    return;
  }
  cfg.auth.users = std::make_shared<const auth::UserList>(std::move(*users));
}

// ---- metrics ----

const Block<MetricsConfig>& metricsBlock() {
  static const Block<MetricsConfig> block(
      "metrics", "metrics.",
      {
          {"max_pools", true, "pool label sets exported; the rest fold into user=\"other\"",
           number(&MetricsConfig::max_pools, 1, 1'000'000)},
      });
  return block;
}

// ---- audit ----

// The syslog facilities (RFC 5424 codes) an audit block may name.
constexpr std::pair<const char*, int> kFacilities[] = {
    {"auth", 4},    {"authpriv", 10}, {"daemon", 3},  {"user", 1},
    {"local0", 16}, {"local1", 17},   {"local2", 18}, {"local3", 19},
    {"local4", 20}, {"local5", 21},   {"local6", 22}, {"local7", 23},
};

const Block<AuditConfig>& auditBlock() {
  static const Block<AuditConfig> block(
      "audit", "audit.",
      {
          {"file", true, "the audit log file (JSON lines), reopened by pgproxy -s reopen",
           nonEmptyText(&AuditConfig::file)},
          {"syslog", true, "send audit events to syslog with this facility instead",
           [](Parser& p, yaml_node_t* v, const std::string& what, AuditConfig& out) {
             auto s = p.scalar(v, what);
             if (!s) {
               return;
             }
             if (syslogFacility(*s) < 0) {
               std::string names;
               for (const auto& f : kFacilities) {
                 names += std::string(names.empty() ? "" : ", ") + f.first;
               }
               p.fail(v, what + " must be a syslog facility (" + names + "), not \"" + *s + "\"");
               return;
             }
             out.syslog = *s;
           }},
          {"syslog_socket", true, "the local syslog socket (default /dev/log)",
           nonEmptyText(&AuditConfig::syslog_socket)},
          {"statements", true, "statements recorded: none, ddl, write or all",
           choice(&AuditConfig::statements, {{"none", AuditStatements::kNone},
                                             {"ddl", AuditStatements::kDdl},
                                             {"write", AuditStatements::kWrite},
                                             {"all", AuditStatements::kAll}})},
          {"redact", true, "what statements lose: passwords (the default) or all literals",
           choice(&AuditConfig::redact_literals, {{"passwords", false}, {"literals", true}})},
          {"fail", true, "open (sessions go on) or closed (refused) while events are lost",
           choice(&AuditConfig::fail_closed, {{"open", false}, {"closed", true}})},
      });
  return block;
}

void parseAudit(Parser& p, yaml_node_t* n, Config& cfg) {
  auditBlock().parse(p, n, cfg.audit);
  if (!cfg.audit.file.empty() && !cfg.audit.syslog.empty()) {
    p.fail(n, "audit.file and audit.syslog are two sinks for the same events; set one");
  } else if (!cfg.audit.enabled() &&
             (cfg.audit.statements != AuditStatements::kNone || cfg.audit.fail_closed)) {
    p.fail(n, "the audit block needs audit.file or audit.syslog (where its events go)");
  } else if (cfg.audit.file.size() > 0 && cfg.audit.file[0] != '/') {
    p.fail(n, "audit.file must be an absolute path (workers and reloads resolve it alike), not \"" +
                  cfg.audit.file + "\"");
  }
}

// ---- plugins ----

// Any YAML value, as the plugin's Lua table will hold it.
PluginValue pluginValue(Parser& p, yaml_node_t* n, int depth) {
  PluginValue v;
  if (depth > 32) {
    p.fail(n, "plugin config nests deeper than 32 levels");
    return v;
  }
  switch (n->type) {
    case YAML_SCALAR_NODE: {
      v.text = Parser::text(n);
      if (n->data.scalar.style == YAML_PLAIN_SCALAR_STYLE) {
        char* end = nullptr;
        if (v.text == "true" || v.text == "false") {
          v.kind = PluginValue::Kind::kBool;
        } else if (!v.text.empty() && (std::strtod(v.text.c_str(), &end), *end == '\0')) {
          v.kind = PluginValue::Kind::kNumber;
        }
      }
      return v;
    }
    case YAML_SEQUENCE_NODE:
      v.kind = PluginValue::Kind::kList;
      for (auto* i = n->data.sequence.items.start; i < n->data.sequence.items.top; ++i) {
        v.values.push_back(pluginValue(p, p.node(*i), depth + 1));
      }
      return v;
    case YAML_MAPPING_NODE:
      v.kind = PluginValue::Kind::kMap;
      for (auto* pr = n->data.mapping.pairs.start; pr < n->data.mapping.pairs.top; ++pr) {
        yaml_node_t* key = p.node(pr->key);
        if (key->type != YAML_SCALAR_NODE) {
          p.fail(key, "plugin config keys must be scalars");
          return v;
        }
        v.keys.push_back(Parser::text(key));
        v.values.push_back(pluginValue(p, p.node(pr->value), depth + 1));
      }
      return v;
    default:
      return v;
  }
}

const Block<PluginConfig>& pluginBlock() {
  static const Block<PluginConfig> block(
      "plugins entry", "plugins.",
      {
          {"file", true, "the plugin's Lua 5.4 source", nonEmptyText(&PluginConfig::file)},
          {"config", true, "any YAML value, the plugin's pgproxy.config",
           [](Parser& p, yaml_node_t* v, const std::string&, PluginConfig& out) {
             out.config = pluginValue(p, v, 0);
           }},
          {"max_instructions", true, "Lua instructions one hook call may run (default 1000000)",
           number(&PluginConfig::max_instructions, 1000, 1'000'000'000)},
          {"max_memory", true, "bytes the plugin's Lua state may hold per worker (default 32MB)",
           [](Parser& p, yaml_node_t* v, const std::string& what, PluginConfig& out) {
             auto s = p.scalar(v, what);
             if (!s) {
               return;
             }
             auto bytes = base::parseSize(*s);
             if (!bytes || *bytes < 256 * 1024 || *bytes > (std::uint64_t{4} << 30)) {
               p.fail(v, what + " must be a size from 256kB to 4GB (\"32MB\"), not \"" + *s + "\"");
               return;
             }
             out.max_memory = *bytes;
           }},
      });
  return block;
}

void parsePlugins(Parser& p, yaml_node_t* n, Config& cfg) {
  if (n->type != YAML_SEQUENCE_NODE) {
    p.fail(n, "plugins must be a list of {file, config}, not a " + Parser::typeName(n));
    return;
  }
  for (auto* i = n->data.sequence.items.start; i < n->data.sequence.items.top; ++i) {
    yaml_node_t* e = p.node(*i);
    PluginConfig plugin;
    plugin.mark = Parser::markOf(e);
    pluginBlock().parse(p, e, plugin);
    if (plugin.file.empty() && !p.failed()) {
      p.fail(e, "a plugins entry needs file: the Lua source to load");
    }
    cfg.plugins.push_back(std::move(plugin));
  }
  if (cfg.plugins.size() > kMaxPlugins) {
    p.fail(n, "at most " + std::to_string(kMaxPlugins) + " plugins");
  }
}

// ---- the top level ----

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

constexpr std::uint64_t kMaxTcpUserTimeoutMs = 2'147'483'647;  // INT_MAX ms, about 596 hours

const Block<Config>& rootBlock() {
  static const Block<Config> block(
      "", "",
      {
          {"listen", true, "address and port (or a list of them) to accept clients on",
           [](Parser& p, yaml_node_t* v, const std::string&, Config& cfg) {
             parseListen(p, v, cfg);
           }},
          {"debug", true, "log each session's state transitions", flag(&Config::debug)},
          {"mappings", true, "external host name to internal PostgreSQL server",
           [](Parser& p, yaml_node_t* v, const std::string&, Config& cfg) {
             parseMappings(p, v, cfg);
           }},
          {"workers", true, "number of worker processes, or auto",
           [](Parser& p, yaml_node_t* v, const std::string&, Config& cfg) {
             parseWorkers(p, v, cfg);
           }},
          {"pid_file", false, "where the master writes its process id", text(&Config::pid_file)},
          {"log_file", false, "log destination; stderr when unset", text(&Config::log_file)},
          // Resolved against the mappings once they are all read (parseRoot).
          {"default", true, "mapping for clients that send no SNI",
           [](Parser& p, yaml_node_t* v, const std::string& what, Config&) {
             (void)p.scalar(v, what);
           }},
          {"handshake_timeout", true, "time a client has to finish its preamble",
           duration(&Config::handshake_timeout_ms)},
          {"connect_timeout", true, "time allowed to connect to a backend",
           duration(&Config::connect_timeout_ms)},
          {"shutdown_timeout", true, "how long draining workers keep sessions open",
           duration(&Config::shutdown_timeout_ms)},
          {"max_draining_generations", true, "old worker generations allowed to drain at once",
           [](Parser& p, yaml_node_t* v, const std::string& what, Config& cfg) {
             auto n = base::parseUnsigned(p.scalar(v, what).value_or(""));
             if (!n || *n < 1 || *n > 64) {
               p.fail(v, "max_draining_generations must be a number from 1 to 64");
             }
             cfg.max_draining_generations = static_cast<unsigned>(n.value_or(1));
           }},
          {"admin", true, "HTTP listener for /metrics, /healthz and /readyz",
           [](Parser& p, yaml_node_t* v, const std::string&, Config& cfg) {
             parseAdmin(p, v, cfg);
           }},
          {"access_log", true, "where the per-connection access log goes",
           text(&Config::access_log)},
          {"log_format", true, "access log format: text or json",
           choice(&Config::log_format, {{"text", LogFormat::kText}, {"json", LogFormat::kJson}})},
          {"log_protocol", true, "log each protocol message of plaintext and terminated sessions",
           flag(&Config::log_protocol)},
          {"splice", true, "how passthrough sessions move bytes: user (default), kernel or auto",
           choice(&Config::splice, {{"auto", SpliceMode::kAuto},
                                    {"kernel", SpliceMode::kKernel},
                                    {"user", SpliceMode::kUser}})},
          {"tls", true, "TLS defaults for terminated sessions",
           [](Parser& p, yaml_node_t* v, const std::string&, Config& cfg) { parseTls(p, v, cfg); }},
          {"auth", true, "client authentication by pgproxy, for mappings with authenticate: true",
           [](Parser& p, yaml_node_t* v, const std::string&, Config& cfg) {
             parseAuth(p, v, cfg);
           }},
          {"allow", true, "client addresses (CIDR) admitted at accept; empty: all",
           cidrs(&Config::access, &net::AccessList::allow)},
          {"deny", true, "client addresses (CIDR) closed at accept",
           cidrs(&Config::access, &net::AccessList::deny)},
          {"max_connections", true, "client sessions at once over all mappings (53300 beyond)",
           number(&Config::max_connections, 1, 1'000'000)},
          {"max_connections_per_client", true, "sessions at once from one client address (53300)",
           number(&Config::max_connections_per_client, 1, 1'000'000)},
          {"connection_rate", true, "new sessions per client address: {per_client, burst} (53300)",
           [](Parser& p, yaml_node_t* v, const std::string&, Config& cfg) {
             parseRate(p, v, cfg.connection_rate);
           }},
          {"instance_id", true, "this instance's id among its peers (1..127), in its cancel keys",
           number(&Config::instance_id, 1, 127)},
          {"peers", true, "the other instances: [{id, address}]; cancels they hold go there",
           [](Parser& p, yaml_node_t* v, const std::string&, Config& cfg) {
             parsePeers(p, v, cfg);
           }},
          {"max_handshakes", true, "connections still in their handshake; beyond it accepts wait",
           number(&Config::max_handshakes, 1, 1'000'000)},
          {"idle_timeout", true, "close a session with no byte either way for this long; off",
           durationOrOff(&Config::idle_timeout_ms)},
          {"tcp_keepalive", true, "TCP keepalive on both sides: off or {idle, interval, count}",
           [](Parser& p, yaml_node_t* v, const std::string&, Config& cfg) {
             parseKeepAlive(p, v, cfg.tcp_keepalive);
           }},
          {"tcp_user_timeout", true, "drop a peer that leaves sent data unacknowledged this long",
           [](Parser& p, yaml_node_t* v, const std::string& what, Config& cfg) {
             cfg.tcp_user_timeout_ms = p.durationOrOff(v, what).value_or(0);
             if (cfg.tcp_user_timeout_ms > kMaxTcpUserTimeoutMs) {
               // The kernel takes an int of milliseconds; a longer value would wrap.
               p.fail(v, "tcp_user_timeout must be at most 596h (the kernel's limit)");
             }
           }},
          {"metrics", true, "metrics settings: max_pools",
           [](Parser& p, yaml_node_t* v, const std::string&, Config& cfg) {
             metricsBlock().parse(p, v, cfg.metrics);
           }},
          {"plugins", true, "Lua plugins: hooks on connect, startup, query and disconnect",
           [](Parser& p, yaml_node_t* v, const std::string&, Config& cfg) {
             parsePlugins(p, v, cfg);
           }},
          {"audit", true, "the audit log: security events as JSON lines",
           [](Parser& p, yaml_node_t* v, const std::string&, Config& cfg) {
             parseAudit(p, v, cfg);
           }},
      });
  return block;
}

void parseRoot(Parser& p, yaml_node_t* root, Config& cfg) {
  Seen seen = rootBlock().parse(p, root, cfg);
  if (p.failed()) {
    return;
  }
  yaml_node_t* mappingsNode = seen["mappings"];
  yaml_node_t* defaultNode = seen["default"];
  std::string defaultName = defaultNode ? base::toLowerAscii(Parser::text(defaultNode)) : "";
  if (!cfg.peers.empty() && cfg.instance_id == 0) {
    p.fail(seen["peers"], "peers needs instance_id: this instance's own id among them");
  }
  if (cfg.peers.size() > kMaxPeers) {
    p.fail(seen["peers"], "peers names " + std::to_string(cfg.peers.size()) +
                              " instances; at most " + std::to_string(kMaxPeers) +
                              " (a cancel request goes to at most 8 places)");
  }
  for (const Peer& peer : cfg.peers) {
    if (peer.id == cfg.instance_id) {
      p.fail(peer.mark, "peers names id " + std::to_string(peer.id) +
                            ", which is this instance's own instance_id");
    }
  }
  bool listenDefaulted = cfg.listen.empty();
  if (listenDefaulted) {
    ListenAddress any;
    any.address = "0.0.0.0";
    any.port = 5400;
    any.mark = Parser::markOf(root);
    cfg.listen.push_back(any);
  }
  checkAdminListen(p, cfg, listenDefaulted);
  addConsoleListen(p, cfg);
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
    if (m.authenticate && m.tls != TlsMode::kTerminate && plaintextMapping == i &&
        cfg.auth.type == auth::ClientAuthType::kCert) {
      // Its clients are all plaintext: every login would be refused.
      p.fail(root, "mapping \"" + m.external + "\" (line " + std::to_string(m.mark.line) +
                       "): auth.type cert needs tls: terminate on the mappings that " +
                       "authenticate: a client certificate comes with a TLS session pgproxy " +
                       "terminates, and this mapping authenticates only plaintext clients");
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

const std::vector<KeySpec>& topLevelKeys() {
  return rootBlock().specs();
}
const std::vector<KeySpec>& listenKeys() {
  return listenBlock().specs();
}
const std::vector<KeySpec>& mappingKeys() {
  return mappingBlock().specs();
}
const std::vector<KeySpec>& adminKeys() {
  return adminBlock().specs();
}
const std::vector<KeySpec>& tlsKeys() {
  return tlsBlock().specs();
}
const std::vector<KeySpec>& authKeys() {
  return authBlock().specs();
}
const std::vector<KeySpec>& backendKeys() {
  return backendBlock().specs();
}
const std::vector<KeySpec>& healthCheckKeys() {
  return healthCheckBlock().specs();
}
const std::vector<KeySpec>& poolKeys() {
  return poolBlock().specs();
}
const std::vector<KeySpec>& routeKeys() {
  return routeBlock().specs();
}
const std::vector<KeySpec>& routeMatchKeys() {
  return routeMatchBlock().specs();
}
const std::vector<KeySpec>& metricsKeys() {
  return metricsBlock().specs();
}
const std::vector<KeySpec>& peerKeys() {
  return peerBlock().specs();
}
const std::vector<KeySpec>& pluginKeys() {
  return pluginBlock().specs();
}
const std::vector<KeySpec>& auditKeys() {
  return auditBlock().specs();
}
const std::vector<KeySpec>& rateKeys() {
  return rateBlock().specs();
}
const std::vector<KeySpec>& keepAliveKeys() {
  return keepAliveBlock().specs();
}

const std::vector<KeyBlock>& keyBlocks() {
  static const std::vector<KeyBlock> blocks = {
      {"", &topLevelKeys()},
      {"listen", &listenKeys()},
      {"mappings", &mappingKeys()},
      {"mappings.backends", &backendKeys()},
      {"mappings.health_check", &healthCheckKeys()},
      {"mappings.pool", &poolKeys()},
      {"mappings.routes", &routeKeys()},
      {"mappings.routes.match", &routeMatchKeys()},
      {"connection_rate", &rateKeys()},
      {"peers", &peerKeys()},
      {"tcp_keepalive", &keepAliveKeys()},
      {"admin", &adminKeys()},
      {"tls", &tlsKeys()},
      {"auth", &authKeys()},
      {"metrics", &metricsKeys()},
      {"audit", &auditKeys()},
      {"plugins", &pluginKeys()},
  };
  return blocks;
}

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

int syslogFacility(std::string_view name) {
  for (const auto& f : kFacilities) {
    if (name == f.first) {
      return f.second;
    }
  }
  return -1;
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
  cfg.text = text;
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
