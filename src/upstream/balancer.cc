#include "pgproxy/upstream/balancer.h"

namespace pgproxy::upstream {

std::optional<std::size_t> Balancer::pick(config::Balance policy, const std::vector<Candidate>& c,
                                          std::uint64_t random) {
  if (current_.size() != c.size()) {
    current_.assign(c.size(), 0);
  }
  std::int64_t total = 0;
  for (const auto& cand : c) {
    total += cand.eligible ? cand.weight : 0;
  }
  if (total == 0) {
    return std::nullopt;
  }
  switch (policy) {
    case config::Balance::kFirst:
      for (std::size_t i = 0; i < c.size(); ++i) {
        if (c[i].eligible) {
          return i;
        }
      }
      break;
    case config::Balance::kRandom: {
      auto r = static_cast<std::int64_t>(random % static_cast<std::uint64_t>(total));
      for (std::size_t i = 0; i < c.size(); ++i) {
        if (c[i].eligible && (r -= c[i].weight) < 0) {
          return i;
        }
      }
      break;
    }
    case config::Balance::kLeastConn: {
      // Fewest sessions per unit of weight; ties go round the list so equal backends share.
      std::optional<std::size_t> best;
      for (std::size_t k = 0; k < c.size(); ++k) {
        std::size_t i = (least_conn_next_ + k) % c.size();
        if (!c[i].eligible) {
          continue;
        }
        if (!best || c[i].active * c[*best].weight < c[*best].active * c[i].weight) {
          best = i;
        }
      }
      least_conn_next_ = (*best + 1) % c.size();
      return best;
    }
    case config::Balance::kRoundRobin: {
      std::optional<std::size_t> best;
      for (std::size_t i = 0; i < c.size(); ++i) {
        if (!c[i].eligible) {
          continue;
        }
        current_[i] += c[i].weight;
        if (!best || current_[i] > current_[*best]) {
          best = i;
        }
      }
      current_[*best] -= total;
      return best;
    }
  }
  return std::nullopt;
}

}  // namespace pgproxy::upstream
