#include "pgproxy/route/router.h"

#include "pgproxy/base/text.h"

namespace pgproxy::route {

Router::Router(const config::Config& cfg) : default_(cfg.default_mapping) {
  for (std::size_t i = 0; i < cfg.mappings.size(); ++i) {
    const std::string& ext = cfg.mappings[i].external;
    std::string name = ext;
    if (!name.empty() && name.back() == '.') {
      name.pop_back();
    }
    if (name.rfind("*.", 0) == 0) {
      wildcard_.emplace(name.substr(2), i);
    } else {
      exact_.emplace(name, i);
    }
  }
}

std::optional<std::size_t> Router::routeSni(std::string_view host) const {
  if (host.empty()) {
    return default_;
  }
  std::string name = base::toLowerAscii(host);
  if (name.back() == '.') {
    name.pop_back();
  }
  if (auto it = exact_.find(name); it != exact_.end()) {
    return it->second;
  }
  // One label only: "a.example.com" matches "*.example.com", "a.b.example.com" does not.
  std::size_t dot = name.find('.');
  if (dot != std::string::npos && dot > 0) {
    if (auto it = wildcard_.find(name.substr(dot + 1)); it != wildcard_.end()) {
      return it->second;
    }
  }
  return std::nullopt;
}

}  // namespace pgproxy::route
