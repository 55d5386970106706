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

Readiness readiness(const metrics::Snapshot& s, const config::Config& cfg) {
  Readiness r;
  if (!s.serving) {
    r.ready = false;
    r.reasons.push_back("pgproxy is not accepting connections (starting or shutting down)");
  }
  for (std::size_t i = 0; i < cfg.mappings.size(); ++i) {
    std::vector<const metrics::BackendSample*> mine;
    bool anyUp = false;
    for (const auto& b : s.backends) {
      if (b.mapping == i) {
        mine.push_back(&b);
        anyUp = anyUp || !b.down;
      }
    }
    if (mine.empty() || anyUp) {
      continue;
    }
    r.ready = false;
    std::string why;
    for (const auto* b : mine) {
      why += (why.empty() ? "" : "; ") + std::string("backend ") + b->backend +
             " unreachable on the last attempt (" +
             (b->last_errno ? base::errnoText(b->last_errno) : "failed") + ")";
    }
    r.reasons.push_back("mapping " + cfg.mappings[i].external + ": " + why);
  }
  return r;
}

}  // namespace pgproxy::admin
