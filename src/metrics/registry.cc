#include <cstring>

#include "pgproxy/metrics/metrics.h"

namespace pgproxy::metrics {
namespace {

constexpr std::size_t idx(Counter c) {
  return static_cast<std::size_t>(c);
}

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
                                       "auth_failed"};
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
    shared_->fold_seq.fetch_add(1, std::memory_order_acq_rel);  // odd: readers retry
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
    shared_->fold_seq.fetch_add(1, std::memory_order_acq_rel);
  }
}

Snapshot Registry::snapshot() const {
  Snapshot s;
  std::size_t n = shared_->mapping_count.load(std::memory_order_acquire);
  if (n == 0) {
    n = 1;  // "unknown" always exists
  }
  for (int attempt = 0; attempt < 1000; ++attempt) {
    std::uint32_t before = shared_->fold_seq.load(std::memory_order_acquire);
    if (before & 1) {
      continue;
    }
    s = Snapshot{};
    s.mapping.assign(n, {});
    s.mapping_active.assign(n, 0);
    auto add = [&](const Slot& slot) {
      for (std::size_t c = 0; c < idx(Counter::kCount); ++c) {
        s.counters[c] += slot.counters[c].load(std::memory_order_relaxed);
      }
      for (std::size_t g = 0; g < static_cast<std::size_t>(Gauge::kCount); ++g) {
        s.gauges[g] += slot.gauges[g].load(std::memory_order_relaxed);
      }
      for (std::size_t m = 0; m < n; ++m) {
        for (std::size_t c = 0; c < kMappingCounters; ++c) {
          s.mapping[m][c] += slot.mapping[m][c].load(std::memory_order_relaxed);
        }
        s.mapping_active[m] += slot.mapping_active[m].load(std::memory_order_relaxed);
      }
      for (std::size_t h = 0; h < static_cast<std::size_t>(Histogram::kCount); ++h) {
        for (std::size_t b = 0; b <= kBuckets; ++b) {
          s.hist_buckets[h][b] += slot.histograms[h].buckets[b].load(std::memory_order_relaxed);
        }
        s.hist_sum_us[h] += slot.histograms[h].sum_us.load(std::memory_order_relaxed);
      }
    };
    add(shared_->retired);
    for (const auto& slot : shared_->slots) {
      add(slot);
    }
    if (shared_->fold_seq.load(std::memory_order_acquire) == before) {
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
  s.config_hash = std::string(ms.config_hash, strnlen(ms.config_hash, sizeof(ms.config_hash)));
  return s;
}

}  // namespace pgproxy::metrics
