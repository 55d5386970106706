#pragma once

#include <netinet/in.h>

#include <atomic>
#include <cstddef>
#include <cstdint>

#include "pgproxy/config/config.h"

namespace pgproxy::limits {

using config::Rate;

// Token bucket arithmetic (pure). A bucket is one 64-bit word so that workers can update a shared
// one with a single compare-and-swap: the high half holds thousandths of a token, the low half
// the millisecond clock (wrapping) of the last update. 0 means "full" (a fresh bucket).
// Takes one token at `now_ms`; false when the bucket is empty, with the wait for the next token
// in `wait_ms`.
bool takeToken(std::uint64_t& bucket, std::uint32_t now_ms, const Rate& rate,
               std::uint32_t* wait_ms);

inline constexpr std::size_t kMaxWorkers = 128;     // worker processes alive at once
inline constexpr std::size_t kCountEntries = 8192;  // client addresses with sessions, per worker
inline constexpr std::size_t kBucketEntries = 65536;
inline constexpr std::size_t kBucketWindow = 8;  // entries a key may live in (eviction scope)
inline constexpr std::size_t kMaxProbe = 64;

// Sessions per client address of one worker. Written only by that worker (no locks); other
// workers read it to sum a client's sessions over all workers.
struct CountEntry {
  std::atomic<std::uint64_t> hi, lo;  // the address; both 0: empty
  std::atomic<std::uint32_t> sessions;
};
struct WorkerCounts {
  std::atomic<std::int32_t> owner;  // pid, 0 when free
  // Entries in use: a worker that exits normally leaves none, and then the master need not touch
  // (and so fault in) the table's pages to clear it.
  std::atomic<std::uint32_t> used;
  CountEntry entries[kCountEntries];
};

// One token bucket, keyed by a seeded hash of (client address, scope).
struct BucketEntry {
  std::atomic<std::uint64_t> key;  // 0: empty
  std::atomic<std::uint64_t> bucket;
};

struct LimitsShared {
  std::uint64_t seed;  // set by the master before the first fork
  WorkerCounts workers[kMaxWorkers];
  BucketEntry buckets[kBucketEntries];
};

// Per-client limits shared by all workers: concurrent sessions per client address and connection
// rates per client address (globally and per mapping). Every table is fixed in size, so a flood
// of source addresses cannot grow memory: a full count table stops counting (the client is
// admitted), and a full bucket window evicts its least recently used bucket (that client starts
// with a full bucket again). Counts of a worker that died are dropped with its table.
class ClientLimits {
 public:
  explicit ClientLimits(LimitsShared* shared) : shared_(shared) {}
  static std::size_t bytesNeeded() { return sizeof(LimitsShared); }

  // Master.
  void seed(std::uint64_t seed) { shared_->seed = seed; }
  void release(std::int32_t owner);  // a worker exited: its sessions are gone

  // Master: count tables are handed out before the fork, like metrics slots (see
  // metrics::Registry::reserveSlot): reserve marks a free one with `holder`, kNoTable when none
  // is free; assign gives it to the forked worker; unreserve returns it when the fork failed.
  static constexpr std::size_t kNoTable = SIZE_MAX;
  std::size_t reserve(std::int32_t holder);
  void assign(std::size_t i, std::int32_t owner);
  void unreserve(std::size_t i);
  std::size_t freeTables() const;
  std::int32_t tableOwner(std::size_t i) const;
  // Worker: counts its sessions in table `i`, which the master assigned to it.
  void attach(std::size_t i) { mine_ = &shared_->workers[i]; }
  // reserve, assign and attach in one step (tests); false when none is free.
  bool claim(std::int32_t owner);
  // Sessions from `client` over all workers (approximate while other workers update theirs).
  std::uint32_t sessions(const in6_addr& client) const;
  // This worker's count; add returns false when its table is full (the session is not counted).
  bool addSession(const in6_addr& client);
  void removeSession(const in6_addr& client);

  // Takes a token from the bucket of (client, scope) (scope 0: global; a mapping's metrics index
  // + 1, which follows its name across reloads).
  bool takeToken(const in6_addr& client, std::uint32_t scope, const Rate& rate,
                 std::uint32_t now_ms, std::uint32_t* wait_ms);

 private:
  std::uint64_t bucketKey(const in6_addr& client, std::uint32_t scope) const;
  std::size_t home(std::uint64_t hi, std::uint64_t lo) const;  // an address's first count entry
  CountEntry* find(WorkerCounts& w, std::uint64_t hi, std::uint64_t lo) const;
  LimitsShared* shared_;
  WorkerCounts* mine_ = nullptr;
};

}  // namespace pgproxy::limits
