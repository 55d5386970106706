#pragma once

#include <atomic>
#include <cstddef>
#include <cstdint>
#include <string>
#include <vector>

#include "pgproxy/base/shared_text.h"

#include "pgproxy/metrics/metrics.h"
#include "pgproxy/upstream/backend_table.h"

namespace pgproxy::admin {

// What operators set from the console or the REST API and every process must obey: mappings
// refusing new clients (DISABLE), mappings whose pools hold new transactions (PAUSE), backends
// out of balancing (DRAIN BACKEND). In shared memory,
// keyed by what outlives a reload (a mapping's metrics index follows its name, a backend's table
// slot its host:port), so the state holds for workers started later (a reload, a respawn after a
// crash) and over a binary upgrade that adopts the regions, as PgBouncer's DISABLE does until
// ENABLE. The data path reads the flag where it decides (routing, balancing): a store takes effect
// in every worker at once, so these commands need no acknowledgement round.
// One generation as the master last described it (SHOW GENERATIONS, the dashboard's history).
struct GenerationInfo {
  std::int64_t generation = 0;  // 0: a reload refused before it made one
  std::string state;            // starting, serving, draining, ended, failed, refused
  std::int64_t workers = 0;     // alive now
  std::string config_hash;
  std::int64_t started_ms = 0, serving_ms = 0, ended_ms = 0;  // wall clock; 0: not (yet)
  std::string detail;                                         // why a reload failed or was refused
  bool operator==(const GenerationInfo&) const = default;
};

inline constexpr std::size_t kGenerationHistory = 16;

// A mapping's activity per second over the master's last stats period (SHOW STATS' avg_*).
struct MappingRates {
  std::uint64_t xact = 0, query = 0, received = 0, sent = 0;  // per second
  std::uint64_t wait_us = 0;                                  // per wait, in that period
  bool operator==(const MappingRates&) const = default;
};
struct SharedRates {
  std::atomic<std::uint64_t> xact, query, received, sent, wait_us;
};

// Its shared form: written by the master only, under an odd sequence; read until it holds still.
struct GenerationSlot {
  std::atomic<std::uint32_t> seq;
  std::atomic<std::int64_t> generation, workers, started_ms, serving_ms, ended_ms;
  base::SharedText<16> state;
  base::SharedText<24> config_hash;
  base::SharedText<160> detail;
};

struct ControlShared {
  // Names this instance's worker control sockets (control_channel.h); set by the master that
  // creates the regions, kept by one that adopts them.
  std::atomic<std::uint64_t> instance;
  std::atomic<std::uint32_t> mapping_flags[metrics::kMaxMappings];
  std::atomic<std::uint32_t> backend_flags[upstream::kMaxBackends];
  SharedRates rates[metrics::kMaxMappings];
  std::atomic<std::uint32_t> generation_count;  // slots in use, newest last
  GenerationSlot generations[kGenerationHistory];
};

class Control {
 public:
  explicit Control(ControlShared* shared) : shared_(shared) {}
  static std::size_t bytesNeeded() { return sizeof(ControlShared); }
  std::uint64_t instance() const { return shared_->instance.load(std::memory_order_acquire); }
  // Master: a mapping's rates over the last stats period; anyone: read them.
  void setRates(std::size_t mapping, const MappingRates& r);
  MappingRates rates(std::size_t mapping) const;
  // Master: the last kGenerationHistory generations, oldest first, replacing what was there.
  void publishGenerations(const std::vector<GenerationInfo>& history);
  // Newest first; a slot being rewritten while read three times running is left out.
  std::vector<GenerationInfo> generations() const;
  void setInstance(std::uint64_t id) { shared_->instance.store(id, std::memory_order_release); }

  // `mapping`: the metrics index of the mapping's name. Setters return the previous value.
  bool disabled(std::size_t mapping) const {
    return test(shared_->mapping_flags, mapping, kDisabled);
  }
  bool setDisabled(std::size_t mapping, bool on) {
    return set(shared_->mapping_flags, mapping, on, kDisabled);
  }
  // PAUSE: the mapping's pools grant no server; waiting clients wait until RESUME.
  bool paused(std::size_t mapping) const { return test(shared_->mapping_flags, mapping, kPaused); }
  bool setPaused(std::size_t mapping, bool on) {
    return set(shared_->mapping_flags, mapping, on, kPaused);
  }
  // `backend`: the backend table's slot.
  bool drained(std::size_t backend) const {
    return test(shared_->backend_flags, backend, kDrained);
  }
  bool setDrained(std::size_t backend, bool on) {
    return set(shared_->backend_flags, backend, on, kDrained);
  }

 private:
  static constexpr std::uint32_t kDisabled = 1, kPaused = 2, kDrained = 1;
  template <std::size_t N>
  static bool test(const std::atomic<std::uint32_t> (&flags)[N], std::size_t i, std::uint32_t bit) {
    return i < N && (flags[i].load(std::memory_order_acquire) & bit) != 0;
  }
  template <std::size_t N>
  static bool set(std::atomic<std::uint32_t> (&flags)[N], std::size_t i, bool on,
                  std::uint32_t bit) {
    if (i >= N) {
      return false;
    }
    return ((on ? flags[i].fetch_or(bit) : flags[i].fetch_and(~bit)) & bit) != 0;
  }
  ControlShared* shared_;
};

}  // namespace pgproxy::admin
