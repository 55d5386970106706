#pragma once

#include <cstddef>
#include <cstdint>
#include <optional>
#include <vector>

#include "pgproxy/config/config.h"

namespace pgproxy::upstream {

// What the balancer may know about one backend of a mapping when a session picks.
struct Candidate {
  unsigned weight = 1;
  bool eligible = true;     // not down, and not already tried by this session
  std::int64_t active = 0;  // sessions on it across all workers (least_conn)
};

// Picks a backend for a new session. Pure and per worker: round_robin keeps the smooth weighted
// round-robin state nginx uses (each worker's sequence honours the weights, so the sum over
// workers does too); the random number comes from the caller so tests can fix it.
class Balancer {
 public:
  explicit Balancer(std::size_t backends) : current_(backends, 0) {}
  // nullopt when no candidate is eligible.
  std::optional<std::size_t> pick(config::Balance policy, const std::vector<Candidate>& c,
                                  std::uint64_t random);

 private:
  std::vector<std::int64_t> current_;  // smooth weighted round robin
  std::size_t least_conn_next_ = 0;    // rotates ties
};

}  // namespace pgproxy::upstream
