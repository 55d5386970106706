#pragma once

#include <atomic>
#include <cstddef>
#include <cstdint>
#include <string>
#include <string_view>
#include <vector>

#include "pgproxy/base/shared_text.h"
#include "pgproxy/config/config.h"
#include "pgproxy/metrics/metrics.h"
#include "pgproxy/upstream/login_probe.h"

namespace pgproxy::upstream {

// Distinct host:port over a master's life; the loader refuses a configuration naming more.
inline constexpr std::size_t kMaxBackends = config::kMaxBackends;
inline constexpr std::size_t kNoBackend = SIZE_MAX;
inline constexpr std::uint64_t kPassiveRetryMs = 10'000;
inline constexpr std::size_t kLastErrorBytes = 128;  // a backend's last error text, cut

enum class Health : std::int32_t { kUnknown = 0, kUp = 1, kDown = 2 };
const char* healthName(Health h);

// One backend (host:port) as every process sees it. Registered by the master, never removed, so
// a reload keeps the health of the backends that remain and a new one starts as unknown
// (eligible). Padded: workers update `active` concurrently.
struct alignas(64) BackendSlot {
  char key[272];                     // "host:port"
  std::atomic<std::int32_t> health;  // Health
  std::atomic<std::int32_t> fails;   // consecutive failed attempts and checks
  std::atomic<std::int32_t> passes;  // consecutive successful checks
  std::atomic<std::int32_t> last_errno;
  std::atomic<std::int64_t> active;          // sessions on it, all workers
  std::atomic<std::uint64_t> down_since_ms;  // monotonic, when it last went down
  std::atomic<std::int32_t> role;            // Role, from logged-in checks
  std::atomic<std::uint64_t> last_check_ms;  // wall clock, when a health check last ended; 0: never
  // How far a standby's replay is behind, in ms, from logged-in checks (0 on a primary or a
  // standby with nothing left to replay); -1: not known (no logged-in check yet).
  std::atomic<std::int64_t> lag_ms;
  // The last failure's text (a check's or a session's connect), for SHOW BACKENDS: written under
  // an odd sequence by whoever failed last (a writer finding it odd skips: one text is enough),
  // read until the sequence holds still. Words, so that no byte is read while it is written.
  std::atomic<std::uint32_t> error_seq;
  base::SharedText<kLastErrorBytes> error;
};

struct BackendShared {
  std::atomic<std::uint32_t> count;
  BackendSlot slots[kMaxBackends];
};

// Health and load of every backend, in memory shared by the master, the workers and the health
// checker. Transitions are decided where the evidence is (a worker's failed connect, a check)
// with compare-and-swap, so each one is logged exactly once.
class BackendTable {
 public:
  explicit BackendTable(BackendShared* shared) : shared_(shared) {}
  static std::size_t bytesNeeded() { return sizeof(BackendShared); }

  // Master: the slot for "host:port", registering it if new; kNoBackend when full.
  std::size_t registerBackend(const std::string& key);
  // Whether registering `keys` would fit beside the backends registered so far; the error names
  // the limit.
  base::Status fits(const std::vector<std::string>& keys) const;
  std::size_t find(const std::string& key) const;
  std::size_t count() const { return shared_->count.load(std::memory_order_acquire); }

  Health health(std::size_t i) const;
  std::int64_t active(std::size_t i) const;
  std::string key(std::size_t i) const;
  int lastErrno(std::size_t i) const;
  // The last failure's text ("" when none, or while it is being rewritten), cut to
  // kLastErrorBytes - 1 bytes.
  std::string lastError(std::size_t i) const;
  void setLastError(std::size_t i, std::string_view text);
  // A health check ended at `unix_ms`; 0 when none has.
  void noteCheck(std::size_t i, std::uint64_t unix_ms);
  std::uint64_t lastCheckMs(std::size_t i) const;
  void addActive(std::size_t i, int delta);

  // A connect or check failed. Returns true when this call took the backend down (after `fall`
  // consecutive failures).
  // `why` becomes the backend's last error (SHOW BACKENDS).
  bool recordFailure(std::size_t i, unsigned fall, int err, std::string_view why);
  // A check succeeded. Returns true when this call brought the backend up (after `rise`).
  bool recordCheckSuccess(std::size_t i, unsigned rise);
  // A session reached the backend: failures so far do not count, and without active checks
  // (nothing else would ever bring it back) it is up again. Returns true on a transition.
  bool recordSessionSuccess(std::size_t i, bool checked);
  // Without active checks a down backend is tried again once it has been down this long (as
  // nginx's fail_timeout), or it would never get the session that shows it is back.
  bool retryDue(std::size_t i, std::uint64_t now_ms, std::uint64_t after_ms) const;
  Role role(std::size_t i) const;
  std::int64_t lagMs(std::size_t i) const;  // -1: unknown
  void setLag(std::size_t i, std::int64_t ms);
  // Returns the previous role.
  Role setRole(std::size_t i, Role r);

 private:
  bool transition(std::size_t i, Health to);
  BackendShared* shared_;
};

// The backends of every configured mapping (`slots[mapping][backend]` are their table indices),
// as metrics samples for /metrics and /readyz.
std::vector<metrics::BackendSample> sampleBackends(
    const config::Config& cfg, const BackendTable& table,
    const std::vector<std::vector<std::size_t>>& slots);

// The table index of each backend of each mapping (kNoBackend where the table was full).
std::vector<std::vector<std::size_t>> backendSlots(const config::Config& cfg,
                                                   const BackendTable& table);

}  // namespace pgproxy::upstream
