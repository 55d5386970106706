#pragma once

#include <atomic>
#include <cstddef>
#include <cstdint>
#include <string>
#include <string_view>
#include <vector>

#include "pgproxy/metrics/metrics.h"

namespace pgproxy::pool {

// The pools' shared state: one entry per pool (mapping, backend, user, database) and one per
// (backend, database) for max_db_connections, in shared memory, so that the caps hold over all
// workers and over old generations still draining after a reload, and the metrics add up.
//
// Every count is kept per worker slot (the worker's metrics slot index) so that the master can
// fold a dead worker's share out exactly; the totals the caps test are atomics updated with the
// per-worker ones. The table is fixed in size: a worker that cannot open an entry refuses the
// client (no pool without its cap).

inline constexpr std::size_t kMaxPools = 4096;       // entries (pools and databases) at once
inline constexpr std::size_t kMaxWorkerSlots = 128;  // = metrics::kMaxSlots
inline constexpr std::size_t kMaxLabel = 63;         // longer names are cut in the labels
inline constexpr std::size_t kNoPool = SIZE_MAX;

// A server connection's state, for the caps (all count) and the metrics.
enum class ServerState : std::uint8_t {
  kLogin,   // connecting, TLS, login, parameter sync
  kIdle,    // in the pool, ready
  kActive,  // linked to a client
  kUsed,    // being reset or checked before it is idle again
  kCount
};

// One pool's counts as read from the table (all workers): what /metrics and the console's
// SHOW POOLS both show.
struct PoolSample {
  std::string mapping, backend, user, database;
  std::uint64_t in_state[static_cast<std::size_t>(ServerState::kCount)] = {};
  std::uint64_t waiting = 0;
  std::uint64_t pinned = 0;
  std::uint64_t transactions = 0;
  std::uint64_t queries = 0;
  std::uint64_t wait_buckets[metrics::kBuckets + 1] = {};
  std::uint64_t wait_sum_us = 0;
  std::uint64_t state(ServerState s) const { return in_state[static_cast<std::size_t>(s)]; }
  std::uint64_t waits() const;  // acquisitions that were timed (the histogram's count)
  void add(const PoolSample& o);
};

struct PoolsShared;  // defined in shared_pools.cc; sized by bytesNeeded()

class SharedPools {
 public:
  explicit SharedPools(PoolsShared* shared) : shared_(shared) {}
  static std::size_t bytesNeeded();

  // Master, before the first fork (not when adopting a previous binary's table): the key of the
  // hash that places entries, so that clients cannot pick names that crowd one probe window.
  void seed(std::uint64_t seed);

  // Worker: counts go to worker slot `slot` (the metrics slot the master reserved for it).
  void attach(std::size_t slot);

  // Finds or creates the entry and takes a reference on it for this worker; kNoPool when the
  // table is full (or, creating, when another worker held the table's insert lock for 100 ms: one
  // descheduled or dead in there). An entry whose references all went away is freed (its counters
  // restart).
  // Count servers and waiting clients only in entries this worker has open (a pool's and its
  // database's alike); an entry closed while this worker still counts in it stays until those
  // counts are gone.
  std::size_t openPool(std::string_view mapping, std::string_view backend, std::string_view user,
                       std::string_view database);
  std::size_t openDatabase(std::string_view backend, std::string_view database);
  void close(std::size_t entry);  // drops this worker's reference

  // A new server connection, counted in kLogin, if the pool has fewer than `cap` servers over all
  // workers and the database (kNoPool: no database cap) fewer than `db_cap` (0: no cap). False
  // when a cap is reached (nothing counted).
  // `beyond_size`: a connection outside the pool's size (the LISTEN hub's): counted in the
  // metrics and the database's cap, not in the pool's.
  bool tryAddServer(std::size_t pool, unsigned cap, std::size_t db, unsigned db_cap,
                    bool beyond_size = false);
  void moveServer(std::size_t pool, ServerState from, ServerState to);
  void removeServer(std::size_t pool, std::size_t db, ServerState from, bool beyond_size = false);
  std::uint32_t servers(std::size_t pool) const;  // all workers, all states
  std::uint32_t serversIn(std::size_t pool, ServerState s) const;

  // Clients waiting for a server of this pool (all workers), and this worker's share.
  void addWaiting(std::size_t pool, int delta);
  std::uint32_t waiting(std::size_t pool) const;
  std::uint32_t myWaiting(std::size_t pool) const;

  // Clients kept on their server connection between transactions by session state that cannot
  // move (pgproxy_pool_pinned_clients).
  void addPinned(std::size_t pool, int delta);
  std::uint32_t pinned(std::size_t pool) const;

  // Counters (not folded on worker death: they only grow).
  void countTransaction(std::size_t pool);
  void countQuery(std::size_t pool);
  void observeWait(std::size_t pool, std::uint64_t us);  // pgproxy_pool_wait_seconds

  // Master: a worker slot's owner died; its counts leave the totals. Before the slot can be
  // handed to another worker (that is, before the metrics slot is freed).
  void foldSlot(std::size_t slot);

  // Every live pool entry (not the per-database ones), read without a lock: an entry freed or
  // reused while it was read is left out.
  std::vector<PoolSample> samples() const;

  // Prometheus text of the pool metrics (HELP/TYPE lines included): at most `max_pools` label
  // sets, the rest summed into user="other", database="other" per mapping and backend.
  void render(std::string& out, unsigned max_pools) const;

 private:
  PoolsShared* shared_;
  std::size_t slot_ = 0;
};

}  // namespace pgproxy::pool
