#include "pgproxy/admin/readiness.h"

#include <cstring>

#include "pgproxy/base/text.h"

namespace pgproxy::admin {
namespace {

std::string jsonString(const std::string& v) {
  std::string out = "\"";
  for (char c : v) {
    if (c == '"' || c == '\\') {
      out += '\\';
    }
    out += (static_cast<unsigned char>(c) < 0x20) ? ' ' : c;
  }
  return out + "\"";
}

}  // namespace

std::string Readiness::json() const {
  std::string out = std::string("{\"status\":\"") + (ready ? "ready" : "not ready") + "\"";
  if (!reasons.empty()) {
    out += ",\"reasons\":[";
    for (std::size_t i = 0; i < reasons.size(); ++i) {
      out += (i ? "," : "") + jsonString(reasons[i]);
    }
    out += "]";
  }
  return out + "}\n";
}

Readiness readiness(const metrics::Snapshot& s, const config::Config& cfg,
                    const std::vector<std::size_t>& mapping_metric) {
  Readiness r;
  if (!s.serving) {
    r.ready = false;
    r.reasons.push_back("pgproxy is not accepting connections (starting or shutting down)");
  }
  for (std::size_t i = 0; i < cfg.mappings.size() && i < mapping_metric.size(); ++i) {
    std::size_t m = mapping_metric[i];
    if (m == metrics::kUnknownMapping || m >= s.mapping_state.size()) {
      continue;
    }
    if (s.mapping_state[m] == metrics::BackendState::kUnreachable) {
      r.ready = false;
      const auto& map = cfg.mappings[i];
      std::string why = s.mapping_errno[m] ? base::errnoText(s.mapping_errno[m]) : "failed";
      r.reasons.push_back("mapping " + map.external + ": backend " + map.internal + ":" +
                          std::to_string(map.port) + " unreachable on the last attempt (" + why +
                          ")");
    }
  }
  return r;
}

}  // namespace pgproxy::admin
