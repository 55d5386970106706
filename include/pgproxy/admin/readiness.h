#pragma once

#include <string>
#include <vector>

#include "pgproxy/config/config.h"
#include "pgproxy/metrics/metrics.h"

namespace pgproxy::admin {

struct Readiness {
  bool ready = true;
  std::vector<std::string> reasons;  // why not, one per problem
  std::string json() const;          // the /readyz body
};

// Ready when the listeners accept and, as far as pgproxy knows (the last connection attempt),
// at least one backend of every configured mapping is reachable. Pure.
Readiness readiness(const metrics::Snapshot& snapshot, const config::Config& cfg,
                    const std::vector<std::size_t>& mapping_metric);

}  // namespace pgproxy::admin
