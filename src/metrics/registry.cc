#include <sched.h>

#include <algorithm>
#include <cstring>

#include "pgproxy/base/clock.h"
#include "pgproxy/metrics/metrics.h"

namespace pgproxy::metrics {
namespace {

constexpr std::size_t idx(Counter c) {
  return static_cast<std::size_t>(c);
}

// How long a scrape waits for a fold to end. A fold moves one slot (tens of microseconds); this
// bounds the stall of the worker's event loop when the master is descheduled in the middle of
// one, after which the scrape gets a 503 instead.
constexpr std::uint64_t kSnapshotBudgetUs = 20000;

template <typename T>
void moveAtomic(std::atomic<T>& from, std::atomic<T>& to) {
  to.fetch_add(from.exchange(0, std::memory_order_relaxed), std::memory_order_relaxed);
}

}  // namespace

const char* outcomeName(Outcome o) {
  static const char* const kNames[] = {"ok",
                                       "client_closed",
                                       "protocol_error",
                                       "unknown_sni",
                                       "no_route",
                                       "backend_unreachable",
                                       "tls_refused_by_backend",
                                       "handshake_timeout",
                                       "cancel",
                                       "shutdown",
                                       "error",
                                       "tls_required",
                                       "tls_handshake_failed",
                                       "too_many_clients",
                                       "denied",
                                       "client_limit",
                                       "rate_limited",
                                       "idle_timeout",
                                       "peer_timeout",
                                       "auth_failed",
                                       "audit_unavailable"};
  static_assert(sizeof(kNames) / sizeof(kNames[0]) == static_cast<std::size_t>(Outcome::kCount));
  return kNames[static_cast<std::size_t>(o)];
}

std::size_t Registry::registerMapping(const std::string& name) {
  std::uint32_t n = shared_->mapping_count.load();
  if (n == 0) {
    std::strcpy(shared_->mappings[0].name, "unknown");
    shared_->mapping_count.store(n = 1);
  }
  for (std::size_t i = 1; i < n; ++i) {
    if (name == shared_->mappings[i].name) {
      return i;
    }
  }
  if (n >= kMaxMappings || name.size() > kMaxNameLength) {
    return kUnknownMapping;
  }
  MappingEntry& e = shared_->mappings[n];
  std::snprintf(e.name, sizeof(e.name), "%s", name.c_str());
  shared_->mapping_count.store(n + 1, std::memory_order_release);
  return n;
}

base::Status Registry::fits(const std::vector<std::string>& names) const {
  std::uint32_t n = shared_->mapping_count.load(std::memory_order_acquire);
  std::size_t used = n == 0 ? 0 : n - 1;  // names registered, without "unknown"
  std::size_t fresh = 0;
  for (std::size_t i = 0; i < names.size(); ++i) {
    if (names[i].size() > kMaxNameLength) {
      return base::Error{"mapping name \"" + names[i].substr(0, 64) + "...\" is longer than " +
                         std::to_string(kMaxNameLength) + " bytes"};
    }
    bool seen = mappingIndex(names[i]) != kUnknownMapping;
    for (std::size_t j = 0; j < i && !seen; ++j) {
      seen = names[j] == names[i];
    }
    fresh += seen ? 0 : 1;
  }
  if (used + fresh > kMaxMappings - 1) {
    return base::Error{
        "the configuration needs " + std::to_string(fresh) + " new mapping name(s), and " +
        std::to_string(used) + " of the " + std::to_string(kMaxMappings - 1) +
        " per-mapping slots (metrics, max_connections, connection_rate) are taken by the names "
        "this master has served since it started, including removed ones; a restart frees the "
        "slots of removed mappings"};
  }
  return {};
}

std::size_t Registry::mappingIndex(const std::string& name) const {
  std::uint32_t n = shared_->mapping_count.load(std::memory_order_acquire);
  for (std::size_t i = 1; i < n; ++i) {
    if (name == shared_->mappings[i].name) {
      return i;
    }
  }
  return kUnknownMapping;
}

std::int64_t Registry::gaugeSum(Gauge g) const {
  std::int64_t n = 0;
  for (const auto& slot : shared_->slots) {
    n += slot.gauges[static_cast<std::size_t>(g)].load(std::memory_order_relaxed);
  }
  return n;
}

std::int64_t Registry::admitted(std::size_t mapping) const {
  std::int64_t n = 0;
  for (const auto& slot : shared_->slots) {
    n += slot.mapping_admitted[mapping].load(std::memory_order_relaxed);
  }
  return n;
}

std::size_t Registry::reserveSlot(std::int32_t holder) {
  for (std::size_t i = 0; i < kMaxSlots; ++i) {
    std::int32_t expected = 0;
    // Compare-and-swap: during a binary upgrade two masters share the table.
    if (shared_->slots[i].owner.compare_exchange_strong(expected, holder)) {
      return i;
    }
  }
  return kNoSlot;
}

void Registry::assignSlot(std::size_t i, std::int32_t owner) {
  shared_->slots[i].owner.store(owner, std::memory_order_release);
}

void Registry::releaseSlot(std::size_t i) {
  shared_->slots[i].owner.store(0, std::memory_order_release);
}

std::size_t Registry::freeSlots() const {
  std::size_t n = 0;
  for (const auto& slot : shared_->slots) {
    n += slot.owner.load(std::memory_order_acquire) == 0 ? 1 : 0;
  }
  return n;
}

std::int32_t Registry::slotOwner(std::size_t i) const {
  return shared_->slots[i].owner.load(std::memory_order_acquire);
}

Slot* Registry::claimSlot(std::int32_t owner) {
  std::size_t i = reserveSlot(owner);
  return i == kNoSlot ? nullptr : slot(i);
}

void Registry::foldSlot(std::int32_t owner) {
  for (auto& slot : shared_->slots) {
    if (slot.owner.load() != owner) {
      continue;
    }
    shared_->fold_seq.fetch_add(1, std::memory_order_relaxed);  // odd: readers retry
    // Pairs with the reader's acquire fence: a reader that sees any of the moves below then
    // sees the odd sequence (or a later one) on its second read.
    std::atomic_thread_fence(std::memory_order_release);
    Slot& r = shared_->retired;
    for (std::size_t c = 0; c < idx(Counter::kCount); ++c) {
      moveAtomic(slot.counters[c], r.counters[c]);
    }
    for (auto& g : slot.gauges) {
      g.store(0);  // its connections died with it
    }
    for (std::size_t m = 0; m < kMaxMappings; ++m) {
      for (std::size_t c = 0; c < kMappingCounters; ++c) {
        moveAtomic(slot.mapping[m][c], r.mapping[m][c]);
      }
      slot.mapping_active[m].store(0);
      slot.mapping_admitted[m].store(0);
    }
    for (std::size_t h = 0; h < static_cast<std::size_t>(Histogram::kCount); ++h) {
      for (std::size_t b = 0; b <= kBuckets; ++b) {
        moveAtomic(slot.histograms[h].buckets[b], r.histograms[h].buckets[b]);
      }
      moveAtomic(slot.histograms[h].sum_us, r.histograms[h].sum_us);
    }
    slot.owner.store(0, std::memory_order_release);
    shared_->fold_seq.fetch_add(1, std::memory_order_release);
  }
}

Snapshot Registry::snapshot() const {
  Snapshot s;
  std::size_t n = shared_->mapping_count.load(std::memory_order_acquire);
  if (n == 0) {
    n = 1;  // "unknown" always exists
  }
  // Sized before any attempt, so that every vector matches mapping_names even when no attempt
  // is consistent.
  s.mapping.assign(n, {});
  s.mapping_active.assign(n, 0);
  const std::uint64_t deadline = base::monotonicUs() + kSnapshotBudgetUs;
  for (bool first = true; first || base::monotonicUs() < deadline; first = false) {
    if (!first) {
      sched_yield();  // let the master finish its fold
    }
    std::uint32_t before = shared_->fold_seq.load(std::memory_order_acquire);
    if (before & 1) {
      continue;
    }
    Snapshot t;
    t.mapping.assign(n, {});
    t.mapping_active.assign(n, 0);
    auto add = [&](const Slot& slot) {
      for (std::size_t c = 0; c < idx(Counter::kCount); ++c) {
        t.counters[c] += slot.counters[c].load(std::memory_order_relaxed);
      }
      for (std::size_t g = 0; g < static_cast<std::size_t>(Gauge::kCount); ++g) {
        t.gauges[g] += slot.gauges[g].load(std::memory_order_relaxed);
      }
      for (std::size_t m = 0; m < n; ++m) {
        for (std::size_t c = 0; c < kMappingCounters; ++c) {
          t.mapping[m][c] += slot.mapping[m][c].load(std::memory_order_relaxed);
        }
        t.mapping_active[m] += slot.mapping_active[m].load(std::memory_order_relaxed);
      }
      for (std::size_t h = 0; h < static_cast<std::size_t>(Histogram::kCount); ++h) {
        for (std::size_t b = 0; b <= kBuckets; ++b) {
          t.hist_buckets[h][b] += slot.histograms[h].buckets[b].load(std::memory_order_relaxed);
        }
        t.hist_sum_us[h] += slot.histograms[h].sum_us.load(std::memory_order_relaxed);
      }
    };
    add(shared_->retired);
    for (const auto& slot : shared_->slots) {
      add(slot);
    }
    // Seqlock: the loads above may not move below the second read of the sequence.
    std::atomic_thread_fence(std::memory_order_acquire);
    if (shared_->fold_seq.load(std::memory_order_relaxed) == before) {
      s = std::move(t);
      s.consistent = true;
      break;
    }
  }
  for (std::size_t m = 0; m < n; ++m) {
    const MappingEntry& e = shared_->mappings[m];
    s.mapping_names.emplace_back(m == 0 ? "unknown" : e.name);
  }
  const MasterStats& ms = shared_->master;
  s.workers = ms.workers.load();
  s.draining_workers = ms.draining_workers.load();
  s.generation = ms.generation.load();
  s.reloads_ok = ms.reloads_ok.load();
  s.reloads_failed = ms.reloads_failed.load();
  s.worker_restarts = ms.worker_restarts.load();
  s.last_reload_unix = ms.last_reload_unix.load();
  s.serving = ms.serving.load() != 0;
  s.audit_failing = ms.audit_failing.load() != 0;
  for (const PluginCounter& c : shared_->plugin_counters) {
    if (c.state.load(std::memory_order_acquire) == 2) {
      s.plugin_counters.emplace_back(std::string(c.name, strnlen(c.name, sizeof(c.name))),
                                     c.value.load(std::memory_order_relaxed));
    }
  }
  std::sort(s.plugin_counters.begin(), s.plugin_counters.end());
  s.config_hash = std::string(ms.config_hash, strnlen(ms.config_hash, sizeof(ms.config_hash)));
  return s;
}

}  // namespace pgproxy::metrics
