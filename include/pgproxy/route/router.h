#pragma once

#include <cstddef>
#include <optional>
#include <string>
#include <string_view>
#include <unordered_map>

#include "pgproxy/config/config.h"

namespace pgproxy::route {

// Compiled SNI routing table: exact names first, then a one-label wildcard, then the default.
// Lookups are case-insensitive and ignore one trailing dot. Returns an index into the config's
// mappings (later: an upstream group).
class Router {
 public:
  explicit Router(const config::Config& cfg);

  // For a client that sent SNI `host`. Unknown names do not fall back to the default: a client that
  // asked for a specific host must never land on an arbitrary one.
  std::optional<std::size_t> routeSni(std::string_view host) const;
  // For a client that sent no SNI (plaintext, IP literal host, sslsni=0).
  std::optional<std::size_t> routeNoSni() const { return default_; }

 private:
  std::unordered_map<std::string, std::size_t> exact_;
  std::unordered_map<std::string, std::size_t> wildcard_;  // key: the suffix after "*."
  std::optional<std::size_t> default_;
};

}  // namespace pgproxy::route
