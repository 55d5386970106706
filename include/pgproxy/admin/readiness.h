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

// Ready when the listeners accept and every configured mapping has at least one backend that is
// not down (snapshot.backends: health checks, or the last connection attempts). Pure.
Readiness readiness(const metrics::Snapshot& snapshot, const config::Config& cfg);

}  // namespace pgproxy::admin
