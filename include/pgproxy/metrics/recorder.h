#pragma once

#include <cstdint>

#include "pgproxy/metrics/metrics.h"

namespace pgproxy::metrics {

// A worker's handle on its own slot: plain relaxed atomic adds, nothing shared with other workers.
class Recorder {
 public:
  Recorder() = default;
  explicit Recorder(Slot* slot) : slot_(slot) {}
  void add(Counter c, std::uint64_t n = 1) {
    slot_->counters[static_cast<std::size_t>(c)].fetch_add(n, std::memory_order_relaxed);
  }
  void gauge(Gauge g, std::int64_t delta) {
    slot_->gauges[static_cast<std::size_t>(g)].fetch_add(delta, std::memory_order_relaxed);
  }
  void add(std::size_t mapping, MappingCounter c, std::uint64_t n) {
    slot_->mapping[mapping][static_cast<std::size_t>(c)].fetch_add(n, std::memory_order_relaxed);
  }
  void closed(std::size_t mapping, Outcome o) {
    slot_
        ->mapping[mapping][static_cast<std::size_t>(MappingCounter::kClosedFirst) +
                           static_cast<std::size_t>(o)]
        .fetch_add(1, std::memory_order_relaxed);
  }
  void admitted(std::size_t mapping, std::int64_t delta) {
    gauge(Gauge::kAdmitted, delta);
    slot_->mapping_admitted[mapping].fetch_add(delta, std::memory_order_relaxed);
  }
  void active(std::size_t mapping, std::int64_t delta) {
    slot_->mapping_active[mapping].fetch_add(delta, std::memory_order_relaxed);
  }
  void observe(Histogram h, std::uint64_t micros) {
    HistogramData& d = slot_->histograms[static_cast<std::size_t>(h)];
    d.buckets[bucketIndex(micros)].fetch_add(1, std::memory_order_relaxed);
    d.sum_us.fetch_add(micros, std::memory_order_relaxed);
  }

 private:
  Slot* slot_ = nullptr;
};

}  // namespace pgproxy::metrics
