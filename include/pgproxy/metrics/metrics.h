#pragma once

#include <array>
#include <atomic>
#include <cstddef>
#include <cstdint>
#include <string>
#include <string_view>
#include <utility>
#include <vector>

#include "pgproxy/base/result.h"

namespace pgproxy::metrics {

// How a connection ended: the `outcome` label of the close counter and the access log's field.
enum class Outcome : std::uint8_t {
  kOk,
  kClientClosedEarly,
  kProtocolError,
  kUnknownSni,
  kNoRoute,
  kBackendUnreachable,
  kTlsRefusedByBackend,
  kHandshakeTimeout,
  kCancel,
  kShutdown,
  kError,
  kTlsRequired,         // tls.require refused a plaintext client
  kTlsHandshakeFailed,  // pgproxy's own handshake with the client failed (terminate)
  kTooManyClients,      // max_connections
  kDenied,              // allow/deny
  kClientLimit,         // max_connections_per_client
  kRateLimited,         // connection_rate
  kIdleTimeout,         // idle_timeout
  kPeerTimeout,         // tcp_keepalive or tcp_user_timeout found a peer gone
  kAuthFailed,          // authenticate: true: the client's or pgproxy's login was refused
  kAuditUnavailable,    // audit.fail: closed while audit events could not be written
  kCount,
};
const char* outcomeName(Outcome o);

// Process-wide counters (summed over workers).
enum class Counter : std::uint8_t {
  kAccepted,
  kCancelForwarded,
  kCancelDropped,
  kCancelUnmatched,
  kLogLinesDropped,        // the main log could not take them (log.h)
  kAccessLogLinesDropped,  // the access log file could not take them
  kAuthQueryFound,         // auth.query lookups by result (auth/secret_fetch.h)
  kAuthQueryAbsent,
  kAuthQueryFailed,
  kAuthQueryCacheHits,  // logins auth.cache answered without a lookup
  kSplitRetried,        // read_write_split: optimistic: a standby's 25006 ran again on the primary
  kAuditWritten,        // audit events the writer put in the sink (audit/writer.h)
  kAuditDropped,        // audit events lost: not taken by the writer's queue, or not written
  kKernelSpliced,       // passthrough sessions put in the kernel's sockmap (splice: kernel)
  kKernelFallbacks,     // times the kernel passed a slow peer's direction back to pgproxy
  kKernelLostBytes,     // bytes a spliced socket took that the kernel never forwarded (a defect)
  kCount,
};
// kActive: client connections open; kAdmitted: those counted against max_connections;
// kHandshaking: those not yet spliced (max_handshakes).
enum class Gauge : std::uint8_t { kActive, kAdmitted, kHandshaking, kCount };
// Per-mapping counters. Closed-by-outcome counters follow the two byte counters.
enum class MappingCounter : std::uint8_t { kBytesUp, kBytesDown, kClosedFirst };
inline constexpr std::size_t kMappingCounters = 2 + static_cast<std::size_t>(Outcome::kCount);
enum class Histogram : std::uint8_t { kBackendConnect, kHandshake, kCount };

inline constexpr std::size_t kMaxSlots = 128;      // worker processes alive at once
inline constexpr std::size_t kMaxMappings = 128;   // distinct mapping names over a master's life
inline constexpr std::size_t kUnknownMapping = 0;  // index of mapping="unknown"
inline constexpr std::size_t kMaxNameLength = 255;
inline constexpr double kBucketBounds[] = {0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05,
                                           0.1,    0.25,  0.5,    1,     2.5,  5,     10};
inline constexpr std::size_t kBuckets = sizeof(kBucketBounds) / sizeof(kBucketBounds[0]);

// The bucket a duration falls in: the first bound it does not exceed; kBuckets is +Inf.
inline std::size_t bucketIndex(std::uint64_t micros) {
  std::size_t b = 0;
  while (b<kBuckets&& static_cast<double>(micros)> kBucketBounds[b] * 1e6) {
    ++b;
  }
  return b;
}

// One metric's documentation: the single source for names and HELP text.
struct MetricSpec {
  const char* name;
  const char* type;  // counter, gauge, histogram
  const char* help;
};
const std::vector<MetricSpec>& metricTable();
// The "# HELP" and "# TYPE" lines of `name` from metricTable(), for renderers of other tables.
void appendMetricHeader(std::string& out, std::string_view name);
// A label value as the text format wants it (backslash, double quote and newline escaped).
std::string escapeLabel(std::string_view value);

// One backend of one configured mapping, as the backend table (upstream/) sees it now.
struct BackendSample {
  std::size_t mapping = 0;  // index into the configuration's mappings
  std::string mapping_name;
  std::string backend;  // host:port
  bool down = false;
  int last_errno = 0;
  std::int64_t active = 0;   // sessions on this backend, all workers and mappings
  std::int64_t lag_ms = -1;  // replica lag from logged-in checks; -1: not known
};

struct HistogramData {
  std::atomic<std::uint64_t> buckets[kBuckets + 1];  // last one is +Inf
  std::atomic<std::uint64_t> sum_us;
};

// Counters of one worker process. Padded so workers never share a cache line.
struct alignas(64) Slot {
  std::atomic<std::int32_t> owner;  // pid, 0 when free
  std::atomic<std::uint64_t> counters[static_cast<std::size_t>(Counter::kCount)];
  std::atomic<std::int64_t> gauges[static_cast<std::size_t>(Gauge::kCount)];
  std::atomic<std::uint64_t> mapping[kMaxMappings][kMappingCounters];
  std::atomic<std::int64_t> mapping_active[kMaxMappings];
  std::atomic<std::int64_t> mapping_admitted[kMaxMappings];
  HistogramData histograms[static_cast<std::size_t>(Histogram::kCount)];
};

// Written by the master only.
struct MasterStats {
  std::atomic<std::int64_t> workers;
  std::atomic<std::int64_t> draining_workers;
  std::atomic<std::int64_t> generation;
  std::atomic<std::uint64_t> reloads_ok;
  std::atomic<std::uint64_t> reloads_failed;
  std::atomic<std::uint64_t> worker_restarts;
  std::atomic<std::int64_t> last_reload_unix;
  std::atomic<std::int32_t> serving;  // listeners accepting (0 before start and while stopping)
  std::atomic<std::int32_t> audit_failing;  // the audit writer's last line was lost
  char config_hash[17];
};

struct MappingEntry {
  char name[kMaxNameLength + 1];
};

// A plugin's shared counter (pgproxy.counter in plugin/host.h): claimed by name, once, by
// whichever worker first uses it; exported as pgproxy_plugin_counter{name}.
struct PluginCounter {
  std::atomic<std::uint32_t> state;  // 0 free, 1 being claimed, 2 named
  char name[60];
  std::atomic<std::int64_t> value;
};
inline constexpr std::size_t kMaxPluginCounters = 256;

// The whole shared region: created zeroed by the master before the first fork.
struct Shared {
  std::atomic<std::uint32_t> fold_seq;  // odd while the master folds a dead worker's slot
  std::atomic<std::uint32_t> mapping_count;
  MasterStats master;
  MappingEntry mappings[kMaxMappings];
  Slot retired;  // counters of workers that have exited
  Slot slots[kMaxSlots];
  PluginCounter plugin_counters[kMaxPluginCounters];
};

// Sums of every counter over all workers. `mapping` and `mapping_active` always have one entry
// per name of `mapping_names`.
struct Snapshot {
  // The sums were read while no fold ran. False when folds kept the snapshot from being consistent
  // for as long as a scrape may wait: the per-slot sums are then zero, not a mix that could count
  // a dead worker's counts twice or not at all.
  bool consistent = false;
  std::uint64_t counters[static_cast<std::size_t>(Counter::kCount)] = {};
  std::int64_t gauges[static_cast<std::size_t>(Gauge::kCount)] = {};
  std::vector<std::string> mapping_names;
  std::vector<BackendSample> backends;  // filled by the caller that knows the configuration
  std::vector<std::array<std::uint64_t, kMappingCounters>> mapping;
  std::vector<std::int64_t> mapping_active;
  std::uint64_t hist_buckets[static_cast<std::size_t>(Histogram::kCount)][kBuckets + 1] = {};
  std::uint64_t hist_sum_us[static_cast<std::size_t>(Histogram::kCount)] = {};
  std::int64_t workers = 0, draining_workers = 0, generation = 0, last_reload_unix = 0;
  std::uint64_t reloads_ok = 0, reloads_failed = 0, worker_restarts = 0;
  bool serving = false;
  bool audit_failing = false;
  std::vector<std::pair<std::string, std::int64_t>> plugin_counters;  // named ones, by name
  std::string config_hash;
};

class Registry {
 public:
  explicit Registry(Shared* shared) : shared_(shared) {}
  static std::size_t bytesNeeded() { return sizeof(Shared); }
  Shared* shared() { return shared_; }

  // Master: the index for a mapping name, registering it if new (names are never removed, so a
  // mapping's counters survive reloads that drop and re-add it). kUnknownMapping when full or the
  // name is too long: call fits() first.
  std::size_t registerMapping(const std::string& name);
  // Master: whether every one of `names` has or can get a slot of its own; else an error naming
  // the limit. Names of mappings that reloads removed keep their slots until the master exits.
  base::Status fits(const std::vector<std::string>& names) const;
  // Master: after a worker exited, move its counts into `retired` so sums never go backwards.
  void foldSlot(std::int32_t owner);
  MasterStats& master() { return shared_->master; }

  // Worker slots are handed out by the master before it forks, so that a worker never goes
  // without one (there is no shared fallback: its gauges would drift) and a reload that would not
  // fit is refused before it starts anything. reserveSlot marks a free slot with `holder` (the
  // master's pid) and returns its index, kNoSlot when all are taken; assignSlot gives it to the
  // forked worker, releaseSlot returns it when the fork failed.
  static constexpr std::size_t kNoSlot = SIZE_MAX;
  std::size_t reserveSlot(std::int32_t holder);
  void assignSlot(std::size_t i, std::int32_t owner);
  void releaseSlot(std::size_t i);
  std::size_t freeSlots() const;
  std::int32_t slotOwner(std::size_t i) const;
  Slot* slot(std::size_t i) { return &shared_->slots[i]; }
  // reserveSlot and assignSlot in one step (tests); nullptr when all are taken.
  Slot* claimSlot(std::int32_t owner);
  std::size_t mappingIndex(const std::string& name) const;
  // Connections counted against max_connections, summed over live workers (a dead worker's
  // count goes with its slot). Checked then incremented, so concurrent workers may overshoot a
  // limit by at most one connection each.
  std::int64_t admitted() const { return gaugeSum(Gauge::kAdmitted); }
  std::int64_t admitted(std::size_t mapping) const;
  std::int64_t handshaking() const { return gaugeSum(Gauge::kHandshaking); }

  // Waits (briefly, bounded) for a fold in progress to end; see Snapshot::consistent.
  Snapshot snapshot() const;

 private:
  std::int64_t gaugeSum(Gauge g) const;  // over live workers
  Shared* shared_;
};

// Prometheus text exposition format (version 0.0.4) for a snapshot. Pure.
std::string renderPrometheus(const Snapshot& s, const char* version);

}  // namespace pgproxy::metrics
