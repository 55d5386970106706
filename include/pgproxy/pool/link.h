#pragma once

#include <cstddef>
#include <cstdint>
#include <string_view>

#include "pgproxy/config/config.h"

namespace pgproxy::pool {

// A pooled client's message stream, as far as its link to a server cares: how many
// ReadyForQuery the server still owes it (one per simple Query, Sync and FunctionCall), whether
// extended-protocol messages wait for their Sync, and where its Terminate is (pgproxy keeps the
// server, so the Terminate is not forwarded). Pure and bounded: it keeps a message header and
// counts.
class ClientFlow {
 public:
  struct Fed {
    std::size_t forward = 0;  // bytes of the chunk, from its start, that go to the server
    bool terminate = false;   // the client said goodbye (after `forward` bytes)
    bool bad = false;         // not protocol 3 messages: the client must be dropped
  };
  Fed feed(std::string_view bytes);
  std::uint32_t owed() const { return owed_; }
  // The server sent a ReadyForQuery.
  void answered() {
    if (owed_ > 0) {
      --owed_;
    }
  }
  bool atBoundary() const { return header_have_ == 0 && remaining_ == 0; }
  // Between transactions as the client sees it: nothing owed, nothing half sent, no extended
  // messages waiting for their Sync.
  bool quiet() const { return owed_ == 0 && atBoundary() && !unsynced_; }
  // The batch being answered is all the client has in flight.
  bool lastOwed() const { return owed_ == 1 && atBoundary() && !unsynced_; }

 private:
  char header_[5] = {};
  std::size_t header_have_ = 0;
  std::uint32_t remaining_ = 0;  // body bytes of the current message still to come
  std::uint32_t owed_ = 0;
  bool unsynced_ = false;
  bool terminated_ = false;
};

// When a server connection goes back to its pool, by mode: session mode keeps it for the whole
// client session; transaction mode after a ReadyForQuery that says "idle" once the client is
// quiet; statement mode the same, and a transaction left open there is the client's error.
enum class Release { kKeep, kRelease, kStatementInTransaction };
Release releaseAfterReady(config::PoolMode mode, char status, const ClientFlow& client);

// Whether a worker should give up one of its idle servers to the clients another worker has
// waiting for the pool's cap: only while it holds more than its share of the pool's size, its
// share being in proportion to its demand (servers in use or logging in, and clients waiting)
// over all workers'. Giving up servers it needs only makes the workers trade them, a new backend
// each time.
struct PoolShare {
  unsigned size = 0;        // the pool's size
  unsigned mine = 0;        // this worker's servers
  unsigned my_idle = 0;     // of them idle
  unsigned my_waiting = 0;  // this worker's clients waiting
  unsigned all = 0;         // every worker's servers
  unsigned all_idle = 0;
  unsigned all_waiting = 0;
};
bool aboveShare(const PoolShare& s);

}  // namespace pgproxy::pool
