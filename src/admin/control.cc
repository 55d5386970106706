#include "pgproxy/admin/control.h"

#include <algorithm>

namespace pgproxy::admin {

void Control::setRates(std::size_t mapping, const MappingRates& r) {
  if (mapping >= metrics::kMaxMappings) {
    return;
  }
  SharedRates& s = shared_->rates[mapping];
  s.xact.store(r.xact, std::memory_order_relaxed);
  s.query.store(r.query, std::memory_order_relaxed);
  s.received.store(r.received, std::memory_order_relaxed);
  s.sent.store(r.sent, std::memory_order_relaxed);
  s.wait_us.store(r.wait_us, std::memory_order_relaxed);
}

MappingRates Control::rates(std::size_t mapping) const {
  MappingRates r;
  if (mapping >= metrics::kMaxMappings) {
    return r;
  }
  const SharedRates& s = shared_->rates[mapping];
  r.xact = s.xact.load(std::memory_order_relaxed);
  r.query = s.query.load(std::memory_order_relaxed);
  r.received = s.received.load(std::memory_order_relaxed);
  r.sent = s.sent.load(std::memory_order_relaxed);
  r.wait_us = s.wait_us.load(std::memory_order_relaxed);
  return r;
}

void Control::publishGenerations(const std::vector<GenerationInfo>& history) {
  std::size_t skip = history.size() > kGenerationHistory ? history.size() - kGenerationHistory : 0;
  std::size_t n = history.size() - skip;
  for (std::size_t i = 0; i < n; ++i) {
    const GenerationInfo& g = history[skip + i];
    GenerationSlot& s = shared_->generations[i];
    std::uint32_t seq = s.seq.load(std::memory_order_relaxed);
    s.seq.store(seq + 1, std::memory_order_relaxed);  // odd: being written
    std::atomic_thread_fence(std::memory_order_release);
    s.generation.store(g.generation, std::memory_order_relaxed);
    s.workers.store(g.workers, std::memory_order_relaxed);
    s.started_ms.store(g.started_ms, std::memory_order_relaxed);
    s.serving_ms.store(g.serving_ms, std::memory_order_relaxed);
    s.ended_ms.store(g.ended_ms, std::memory_order_relaxed);
    s.state.store(g.state);
    s.config_hash.store(g.config_hash);
    s.detail.store(g.detail);
    s.seq.store(seq + 2, std::memory_order_release);
  }
  shared_->generation_count.store(static_cast<std::uint32_t>(n), std::memory_order_release);
}

std::vector<GenerationInfo> Control::generations() const {
  std::vector<GenerationInfo> out;
  std::size_t n = std::min<std::size_t>(shared_->generation_count.load(std::memory_order_acquire),
                                        kGenerationHistory);
  for (std::size_t i = n; i-- > 0;) {
    const GenerationSlot& s = shared_->generations[i];
    for (int attempt = 0; attempt < 3; ++attempt) {
      std::uint32_t seq = s.seq.load(std::memory_order_acquire);
      if (seq & 1) {
        continue;
      }
      GenerationInfo g;
      g.generation = s.generation.load(std::memory_order_relaxed);
      g.workers = s.workers.load(std::memory_order_relaxed);
      g.started_ms = s.started_ms.load(std::memory_order_relaxed);
      g.serving_ms = s.serving_ms.load(std::memory_order_relaxed);
      g.ended_ms = s.ended_ms.load(std::memory_order_relaxed);
      g.state = s.state.load();
      g.config_hash = s.config_hash.load();
      g.detail = s.detail.load();
      std::atomic_thread_fence(std::memory_order_acquire);
      if (s.seq.load(std::memory_order_relaxed) == seq) {
        out.push_back(std::move(g));
        break;
      }
    }
  }
  return out;
}

}  // namespace pgproxy::admin
