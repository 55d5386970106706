#include "pgproxy/pool/shared_pools.h"

#include <linux/futex.h>
#include <sys/syscall.h>
#include <time.h>
#include <unistd.h>

#include <bit>
#include <cstdio>
#include <cstring>
#include <unordered_map>
#include <vector>

#include "pgproxy/base/clock.h"
#include "pgproxy/metrics/metrics.h"

namespace pgproxy::pool {
namespace {

// How the table stays right while processes come and go:
//
// Each entry has one state word: free, busy (being created, by the slot in the word) or live
// (with its reference count in the word), and an incarnation number that every creation bumps.
// Taking a reference is a compare-and-swap of that word from live to live plus one; dropping the
// last one swaps live-with-one to free. Both are the same word, so a lookup that races with the
// last close either takes its reference first (and the close then only drops its own) or sees
// the entry free (and goes on looking); it never holds a reference on a freed entry. A lookup
// compares the key before it swaps; the incarnation in the word makes the swap fail when the
// entry was freed and created again for another key in between, so the key it compared is the
// key it references.
//
// Removing an entry leaves a hole that open addressing would stop at, so lookups scan the whole
// probe window (kProbe entries of one compact index) instead of stopping at the first free one.
// Two workers creating the same pool at once would each find it missing and create it twice,
// splitting its cap in two: creation (not lookup) takes the table's one insert lock, looks again
// and then claims a free entry. The lock word names the slot that holds it, and a slot names the
// entry it is creating, so that when a worker dies in there the master's fold frees both. Other
// workers wait for the lock a bounded time (kLockBudgetUs), then refuse the client.
//
// A worker's slot holds at most one reference per entry: its row is "pinned" (a bit in the slot's
// bitmap) while it has the entry open or counts servers or waiting clients in it. The global
// counts are only changed by pinned slots, so when the last pin goes the counts are zero and the
// entry can go; they are reset when the entry is created again. The fold of a dead worker walks
// its bitmap only (nothing when it exited with every pool closed), takes its rows out of the
// totals and drops its pins.
//
// A worker killed between two atomic operations of one change must leave counts that are too
// high, never too low (a low total lets a pool exceed its cap, and wraps below zero): increments
// go to the totals before the slot's row, decrements to the row first, and a pin is taken before
// its bit is set and dropped after it is cleared. What such a death leaves over (one count, or a
// pin that keeps an entry alive) goes when the entry is freed and created again.
//
// Readers without a reference (render) copy a live entry and then check that its word still has
// the same incarnation and is live, as a seqlock reader does.

constexpr std::size_t kStates = static_cast<std::size_t>(ServerState::kCount);
constexpr std::size_t kProbe = 64;
constexpr std::size_t kMask = kMaxPools - 1;
constexpr std::size_t kLabelWords = (kMaxLabel + 1) / 8;
constexpr std::size_t kBitmapWords = kMaxPools / 64;
// A holder that a loaded machine descheduled inside its few microseconds under the lock comes back
// within a few scheduler slices (20 ms was seen to be too short with 3 busy processes per CPU).
// Beyond that the holder most likely died there, and the client is refused until the fold.
constexpr std::uint64_t kLockBudgetUs = 100000;
static_assert((kMaxPools & kMask) == 0 && kProbe <= kMaxPools);
static_assert((kMaxLabel + 1) % 8 == 0);
static_assert(kMaxWorkerSlots == metrics::kMaxSlots);

// The state word: bits 0-1 the state, 2-31 the references (live) or the creating slot + 1
// (busy), 32-63 the incarnation.
constexpr std::uint64_t kFree = 0;
constexpr std::uint64_t kBusy = 1;
constexpr std::uint64_t kLive = 2;
constexpr std::uint64_t kStateMask = 3;
constexpr std::uint64_t kRef = 4;
constexpr std::uint64_t kLowMask = 0xffffffffull;
constexpr std::uint64_t kIncarnation = 1ull << 32;

enum Kind : std::uint32_t { kPoolKind = 1, kDatabaseKind = 2 };
enum LabelIndex : std::size_t { kMappingLabel, kBackendLabel, kUserLabel, kDatabaseLabel, kLabels };

constexpr std::uint64_t stateOf(std::uint64_t w) {
  return w & kStateMask;
}
constexpr std::uint64_t refsOf(std::uint64_t w) {
  return (w & kLowMask) >> 2;
}
constexpr std::uint64_t incarnationOf(std::uint64_t w) {
  return w >> 32;
}

}  // namespace

// The lookup scans these, so they are kept apart from the entries' bulk.
struct IndexEntry {
  std::atomic<std::uint64_t> word;
  std::atomic<std::uint64_t> hash;
};

// Totals over all workers, counters, and the key. The key is written while the entry is busy
// and read by others only once it is live: atomics all the same, for the seqlock readers.
struct alignas(64) Entry {
  std::atomic<std::uint32_t> servers;  // the pool (or database) cap counts this
  std::atomic<std::uint32_t> in_state[kStates];
  std::atomic<std::uint32_t> waiting;
  std::atomic<std::uint32_t> pinned_clients;
  std::atomic<std::uint32_t> kind;
  std::atomic<std::uint64_t> transactions;
  std::atomic<std::uint64_t> queries;
  std::atomic<std::uint64_t> wait_buckets[metrics::kBuckets + 1];
  std::atomic<std::uint64_t> wait_sum_us;
  // Each label NUL-padded to kMaxLabel + 1 bytes.
  std::atomic<std::uint64_t> labels[kLabels][kLabelWords];
};

// One worker slot's share of one entry. Written only by that worker, and by the master's fold
// once it is dead.
struct Row {
  std::atomic<std::uint32_t> refs;
  std::atomic<std::uint32_t> servers;
  std::atomic<std::uint32_t> state[kStates];
  std::atomic<std::uint32_t> waiting;
  std::atomic<std::uint32_t> pinned_clients;
};

// Tables per slot rather than columns per entry: a worker faults in only the pages of the rows it
// uses, and the fold reads only the rows its bitmap names (about 112 KiB a slot, mostly untouched).
struct alignas(64) SlotTable {
  std::atomic<std::uint32_t> used;      // pinned rows: 0 after a clean exit, and the fold is free
  std::atomic<std::uint32_t> creating;  // the entry + 1 it is creating under the insert lock
  std::atomic<std::uint64_t> pinned[kBitmapWords];
  Row rows[kMaxPools];
};

struct PoolsShared {
  std::uint64_t seed;
  alignas(64) std::atomic<std::uint32_t> insert_lock;  // 0, or the holder's slot + 1
  std::atomic<std::uint32_t> lock_waiters;             // asleep on insert_lock
  alignas(64) IndexEntry index[kMaxPools];
  Entry entries[kMaxPools];
  SlotTable slots[kMaxWorkerSlots];
};

static_assert(std::atomic<std::uint64_t>::is_always_lock_free &&
              std::atomic<std::uint32_t>::is_always_lock_free);
// The futex waits on the atomic's own bytes.
static_assert(sizeof(std::atomic<std::uint32_t>) == sizeof(std::uint32_t));

namespace {

// splitmix64's finalizer; with the master's random seed mixed in first.
std::uint64_t mix(std::uint64_t x) {
  x ^= x >> 30;
  x *= 0xbf58476d1ce4e5b9ull;
  x ^= x >> 27;
  x *= 0x94d049bb133111ebull;
  x ^= x >> 31;
  return x;
}

// Not FUTEX_PRIVATE_FLAG: the waiters are other processes.
void futexWait(std::atomic<std::uint32_t>& word, std::uint32_t value, long timeout_ns) {
  timespec ts{0, timeout_ns};
  syscall(SYS_futex, reinterpret_cast<std::uint32_t*>(&word), FUTEX_WAIT, value, &ts, nullptr, 0);
}
void futexWakeOne(std::atomic<std::uint32_t>& word) {
  syscall(SYS_futex, reinterpret_cast<std::uint32_t*>(&word), FUTEX_WAKE, 1, nullptr, nullptr, 0);
}

std::uint64_t absorb(std::uint64_t h, std::string_view s) {
  h = mix(h ^ s.size());
  std::size_t i = 0;
  for (; i + 8 <= s.size(); i += 8) {
    std::uint64_t chunk;
    std::memcpy(&chunk, s.data() + i, 8);
    h = mix(h ^ chunk);
  }
  std::uint64_t tail = 0;
  if (i < s.size()) {  // an empty view's data() may be null, which memcpy must not get
    std::memcpy(&tail, s.data() + i, s.size() - i);
  }
  return mix(h ^ tail);
}

// A name cut to kMaxLabel bytes, without splitting a UTF-8 sequence (Prometheus wants valid
// UTF-8 in label values).
std::string_view cut(std::string_view s) {
  if (s.size() <= kMaxLabel) {
    return s;
  }
  std::size_t n = kMaxLabel;
  while (n > 0 && (static_cast<unsigned char>(s[n]) & 0xc0) == 0x80) {
    --n;
  }
  return s.substr(0, n);
}

// What a lookup compares. The hash covers the whole names, the stored labels only their first
// kMaxLabel bytes: names that differ only further on are told apart by the 64-bit hash.
struct Key {
  std::uint64_t hash;
  std::uint32_t kind;
  std::uint64_t words[kLabels][kLabelWords];
};

Key makeKey(std::uint64_t seed, Kind kind, const std::string_view (&names)[kLabels]) {
  Key k{};
  k.kind = kind;
  std::uint64_t h = mix(seed ^ kind);
  for (std::size_t l = 0; l < kLabels; ++l) {
    h = absorb(h, names[l]);
    std::string_view c = cut(names[l]);
    char buf[kMaxLabel + 1] = {};
    if (!c.empty()) {
      std::memcpy(buf, c.data(), c.size());
    }
    std::memcpy(k.words[l], buf, sizeof(buf));
  }
  k.hash = h;
  return k;
}

bool sameKey(const Entry& e, const Key& k) {
  if (e.kind.load(std::memory_order_relaxed) != k.kind) {
    return false;
  }
  for (std::size_t l = 0; l < kLabels; ++l) {
    for (std::size_t w = 0; w < kLabelWords; ++w) {
      if (e.labels[l][w].load(std::memory_order_relaxed) != k.words[l][w]) {
        return false;
      }
    }
  }
  return true;
}

std::string labelText(const Entry& e, std::size_t l) {
  char buf[kMaxLabel + 1];
  for (std::size_t w = 0; w < kLabelWords; ++w) {
    std::uint64_t v = e.labels[l][w].load(std::memory_order_relaxed);
    std::memcpy(buf + w * 8, &v, 8);
  }
  return std::string(buf, strnlen(buf, sizeof(buf)));
}

// Increments `n` unless that would reach `cap`.
bool incrementBelow(std::atomic<std::uint32_t>& n, unsigned cap) {
  std::uint32_t v = n.load(std::memory_order_relaxed);
  do {
    if (v >= cap) {
      return false;
    }
  } while (!n.compare_exchange_weak(v, v + 1, std::memory_order_relaxed));
  return true;
}

// The fold's subtraction: a total that a death left too low must stop at zero, not wrap.
void subtractFloor(std::atomic<std::uint32_t>& n, std::uint32_t d) {
  std::uint32_t v = n.load(std::memory_order_relaxed);
  while (!n.compare_exchange_weak(v, v > d ? v - d : 0, std::memory_order_relaxed)) {
  }
}

void add(std::atomic<std::uint32_t>& n, std::uint32_t d) {
  n.fetch_add(d, std::memory_order_relaxed);
}
void sub(std::atomic<std::uint32_t>& n, std::uint32_t d) {
  n.fetch_sub(d, std::memory_order_relaxed);
}

// Drops one reference; the last one frees the entry.
void unref(IndexEntry& ix) {
  std::uint64_t w = ix.word.load(std::memory_order_relaxed);
  std::uint64_t next;
  do {
    next = refsOf(w) > 1 ? w - kRef : (w & ~kLowMask) | kFree;
  } while (!ix.word.compare_exchange_weak(w, next, std::memory_order_acq_rel,
                                          std::memory_order_relaxed));
}

void resetCounts(Entry& e) {
  e.servers.store(0, std::memory_order_relaxed);
  for (auto& s : e.in_state) {
    s.store(0, std::memory_order_relaxed);
  }
  e.waiting.store(0, std::memory_order_relaxed);
  e.transactions.store(0, std::memory_order_relaxed);
  e.queries.store(0, std::memory_order_relaxed);
  for (auto& b : e.wait_buckets) {
    b.store(0, std::memory_order_relaxed);
  }
  e.wait_sum_us.store(0, std::memory_order_relaxed);
}

}  // namespace

std::size_t SharedPools::bytesNeeded() {
  return sizeof(PoolsShared);
}

void SharedPools::seed(std::uint64_t seed) {
  shared_->seed = seed;
}

void SharedPools::attach(std::size_t slot) {
  slot_ = slot;
}

namespace {

// The operations on one worker slot's rows.
class SlotView {
 public:
  SlotView(PoolsShared& s, std::size_t slot) : s_(s), slot_(slot), t_(s.slots[slot]) {}
  Row& row(std::size_t e) { return t_.rows[e]; }
  bool pinned(std::size_t e) const {
    return (t_.pinned[e / 64].load(std::memory_order_relaxed) >> (e % 64)) & 1;
  }
  // The entry's reference for this slot is already taken.
  void pin(std::size_t e) {
    row(e).refs.store(1, std::memory_order_relaxed);
    auto& bits = t_.pinned[e / 64];
    bits.store(bits.load(std::memory_order_relaxed) | (1ull << (e % 64)),
               std::memory_order_relaxed);
    t_.used.store(t_.used.load(std::memory_order_relaxed) + 1, std::memory_order_relaxed);
  }
  void unpinIfIdle(std::size_t e) {
    Row& r = row(e);
    if (r.refs.load(std::memory_order_relaxed) != 0 ||
        r.servers.load(std::memory_order_relaxed) != 0 ||
        r.waiting.load(std::memory_order_relaxed) != 0 ||
        r.pinned_clients.load(std::memory_order_relaxed) != 0 || !pinned(e)) {
      return;
    }
    auto& bits = t_.pinned[e / 64];
    bits.store(bits.load(std::memory_order_relaxed) & ~(1ull << (e % 64)),
               std::memory_order_relaxed);
    t_.used.store(t_.used.load(std::memory_order_relaxed) - 1, std::memory_order_relaxed);
    unref(s_.index[e]);
  }

  std::size_t find(const Key& k) {
    std::size_t home = k.hash & kMask;
    for (std::size_t i = 0; i < kProbe; ++i) {
      std::size_t e = (home + i) & kMask;
      IndexEntry& ix = s_.index[e];
      std::uint64_t w = ix.word.load(std::memory_order_acquire);
      if (stateOf(w) != kLive || ix.hash.load(std::memory_order_relaxed) != k.hash ||
          !sameKey(s_.entries[e], k)) {
        continue;
      }
      if (pinned(e)) {
        // Our pin keeps it live and its key as compared.
        row(e).refs.fetch_add(1, std::memory_order_relaxed);
        return e;
      }
      const std::uint64_t incarnation = incarnationOf(w);
      while (stateOf(w) == kLive && incarnationOf(w) == incarnation) {
        if (ix.word.compare_exchange_weak(w, w + kRef, std::memory_order_acq_rel,
                                          std::memory_order_acquire)) {
          pin(e);
          return e;
        }
      }
    }
    return kNoPool;
  }

  // Under the insert lock.
  std::size_t create(const Key& k) {
    std::size_t home = k.hash & kMask;
    for (std::size_t i = 0; i < kProbe; ++i) {
      std::size_t e = (home + i) & kMask;
      IndexEntry& ix = s_.index[e];
      std::uint64_t w = ix.word.load(std::memory_order_acquire);
      if (stateOf(w) != kFree) {
        continue;
      }
      t_.creating.store(static_cast<std::uint32_t>(e + 1), std::memory_order_relaxed);
      const std::uint64_t incarnation = (w & ~kLowMask) + kIncarnation;
      if (!ix.word.compare_exchange_strong(w, incarnation | (slot_ + 1) << 2 | kBusy,
                                           std::memory_order_acq_rel)) {
        continue;  // only lock holders take free entries: not expected
      }
      // Readers that see any of the writes below see the busy word when they look again.
      std::atomic_thread_fence(std::memory_order_release);
      Entry& en = s_.entries[e];
      resetCounts(en);
      en.kind.store(k.kind, std::memory_order_relaxed);
      for (std::size_t l = 0; l < kLabels; ++l) {
        for (std::size_t j = 0; j < kLabelWords; ++j) {
          en.labels[l][j].store(k.words[l][j], std::memory_order_relaxed);
        }
      }
      ix.hash.store(k.hash, std::memory_order_relaxed);
      ix.word.store(incarnation | kRef | kLive, std::memory_order_release);
      pin(e);
      t_.creating.store(0, std::memory_order_relaxed);
      return e;
    }
    t_.creating.store(0, std::memory_order_relaxed);
    return kNoPool;
  }

  bool lock() {
    const std::uint32_t me = static_cast<std::uint32_t>(slot_ + 1);
    std::uint64_t deadline = 0;
    for (unsigned spins = 0;; ++spins) {
      std::uint32_t held = 0;
      if (s_.insert_lock.compare_exchange_weak(held, me, std::memory_order_acquire,
                                               std::memory_order_relaxed)) {
        return true;
      }
      if (spins < 64 || held == 0) {
        continue;
      }
      // Held for a few microseconds by a running worker; for longer by one that was descheduled
      // in there (sleeping, not spinning, lets it run) or that died in there (the master's fold
      // frees it; the short sleeps notice).
      std::uint64_t now = base::monotonicUs();
      if (deadline == 0) {
        deadline = now + kLockBudgetUs;
      } else if (now >= deadline) {
        return false;
      }
      s_.lock_waiters.fetch_add(1, std::memory_order_seq_cst);
      futexWait(s_.insert_lock, held, 1'000'000);
      s_.lock_waiters.fetch_sub(1, std::memory_order_relaxed);
    }
  }
  void unlock() {
    // seq_cst on both sides: a waiter that counted itself after this load finds the lock free
    // when the futex compares, and one counted before is woken.
    s_.insert_lock.store(0, std::memory_order_seq_cst);
    if (s_.lock_waiters.load(std::memory_order_seq_cst) != 0) {
      futexWakeOne(s_.insert_lock);
    }
  }

  // The master's fold of a dead worker's slot.
  void fold() {
    if (t_.used.load(std::memory_order_relaxed) != 0) {
      for (std::size_t i = 0; i < kBitmapWords; ++i) {
        std::uint64_t bits = t_.pinned[i].load(std::memory_order_relaxed);
        while (bits != 0) {
          std::size_t e = i * 64 + static_cast<std::size_t>(std::countr_zero(bits));
          bits &= bits - 1;
          Row& r = row(e);
          Entry& en = s_.entries[e];
          subtractFloor(en.servers, r.servers.exchange(0, std::memory_order_relaxed));
          for (std::size_t st = 0; st < kStates; ++st) {
            subtractFloor(en.in_state[st], r.state[st].exchange(0, std::memory_order_relaxed));
          }
          subtractFloor(en.waiting, r.waiting.exchange(0, std::memory_order_relaxed));
          subtractFloor(en.pinned_clients, r.pinned_clients.exchange(0, std::memory_order_relaxed));
          r.refs.store(0, std::memory_order_relaxed);
          unref(s_.index[e]);
        }
        t_.pinned[i].store(0, std::memory_order_relaxed);
      }
      t_.used.store(0, std::memory_order_relaxed);
    }
    const std::uint32_t me = static_cast<std::uint32_t>(slot_ + 1);
    if (s_.insert_lock.load(std::memory_order_acquire) != me) {
      return;
    }
    if (std::uint32_t c = t_.creating.load(std::memory_order_relaxed); c != 0) {
      IndexEntry& ix = s_.index[c - 1];
      std::uint64_t w = ix.word.load(std::memory_order_acquire);
      if (stateOf(w) == kBusy && refsOf(w) == me) {
        ix.word.store((w & ~kLowMask) | kFree, std::memory_order_release);
      }
      t_.creating.store(0, std::memory_order_relaxed);
    }
    unlock();
  }

 private:
  PoolsShared& s_;
  std::size_t slot_;
  SlotTable& t_;
};

}  // namespace

std::size_t SharedPools::openPool(std::string_view mapping, std::string_view backend,
                                  std::string_view user, std::string_view database) {
  const std::string_view names[kLabels] = {mapping, backend, user, database};
  Key k = makeKey(shared_->seed, kPoolKind, names);
  SlotView v(*shared_, slot_);
  if (std::size_t e = v.find(k); e != kNoPool) {
    return e;
  }
  if (!v.lock()) {
    return kNoPool;
  }
  std::size_t e = v.find(k);  // created by another worker since
  if (e == kNoPool) {
    e = v.create(k);
  }
  v.unlock();
  return e;
}

std::size_t SharedPools::openDatabase(std::string_view backend, std::string_view database) {
  const std::string_view names[kLabels] = {{}, backend, {}, database};
  Key k = makeKey(shared_->seed, kDatabaseKind, names);
  SlotView v(*shared_, slot_);
  if (std::size_t e = v.find(k); e != kNoPool) {
    return e;
  }
  if (!v.lock()) {
    return kNoPool;
  }
  std::size_t e = v.find(k);
  if (e == kNoPool) {
    e = v.create(k);
  }
  v.unlock();
  return e;
}

void SharedPools::close(std::size_t entry) {
  if (entry >= kMaxPools) {
    return;
  }
  SlotView v(*shared_, slot_);
  Row& r = v.row(entry);
  if (std::uint32_t refs = r.refs.load(std::memory_order_relaxed); refs != 0) {
    r.refs.store(refs - 1, std::memory_order_relaxed);
  }
  v.unpinIfIdle(entry);
}

bool SharedPools::tryAddServer(std::size_t pool, unsigned cap, std::size_t db, unsigned db_cap,
                               bool beyond_size) {
  Entry& p = shared_->entries[pool];
  if (!beyond_size && !incrementBelow(p.servers, cap)) {
    return false;
  }
  SlotTable& t = shared_->slots[slot_];
  if (db != kNoPool) {
    Entry& d = shared_->entries[db];
    if (db_cap == 0) {
      add(d.servers, 1);  // counted all the same: a reload may set a cap
    } else if (!incrementBelow(d.servers, db_cap)) {
      if (!beyond_size) {
        sub(p.servers, 1);
      }
      return false;
    }
    add(t.rows[db].servers, 1);
  }
  constexpr auto kLogin = static_cast<std::size_t>(ServerState::kLogin);
  add(p.in_state[kLogin], 1);
  Row& r = t.rows[pool];
  if (!beyond_size) {
    add(r.servers, 1);
  }
  add(r.state[kLogin], 1);
  return true;
}

void SharedPools::moveServer(std::size_t pool, ServerState from, ServerState to) {
  if (from == to) {
    return;
  }
  Entry& p = shared_->entries[pool];
  Row& r = shared_->slots[slot_].rows[pool];
  auto f = static_cast<std::size_t>(from);
  auto t = static_cast<std::size_t>(to);
  add(p.in_state[t], 1);
  add(r.state[t], 1);
  sub(r.state[f], 1);
  sub(p.in_state[f], 1);
}

void SharedPools::removeServer(std::size_t pool, std::size_t db, ServerState from,
                               bool beyond_size) {
  SlotView v(*shared_, slot_);
  auto f = static_cast<std::size_t>(from);
  Row& r = v.row(pool);
  sub(r.state[f], 1);
  if (!beyond_size) {
    sub(r.servers, 1);
  }
  if (db != kNoPool) {
    sub(v.row(db).servers, 1);
  }
  Entry& p = shared_->entries[pool];
  sub(p.in_state[f], 1);
  if (!beyond_size) {
    sub(p.servers, 1);
  }
  if (db != kNoPool) {
    sub(shared_->entries[db].servers, 1);
    v.unpinIfIdle(db);
  }
  v.unpinIfIdle(pool);
}

std::uint32_t SharedPools::servers(std::size_t pool) const {
  return shared_->entries[pool].servers.load(std::memory_order_relaxed);
}

std::uint32_t SharedPools::serversIn(std::size_t pool, ServerState s) const {
  return shared_->entries[pool].in_state[static_cast<std::size_t>(s)].load(
      std::memory_order_relaxed);
}

namespace {

// A gauge of clients (waiting, pinned): the total the metrics read and this worker's share, which
// the master folds out if the worker dies.
void addClientGauge(PoolsShared& shared, std::size_t slot, std::size_t pool, int delta,
                    std::atomic<std::uint32_t> Entry::*total,
                    std::atomic<std::uint32_t> Row::*mine) {
  Entry& p = shared.entries[pool];
  SlotView v(shared, slot);
  Row& r = v.row(pool);
  if (delta >= 0) {
    add(p.*total, static_cast<std::uint32_t>(delta));
    add(r.*mine, static_cast<std::uint32_t>(delta));
    return;
  }
  auto d = static_cast<std::uint32_t>(-static_cast<std::int64_t>(delta));
  sub(r.*mine, d);
  sub(p.*total, d);
  v.unpinIfIdle(pool);
}

}  // namespace

void SharedPools::addWaiting(std::size_t pool, int delta) {
  addClientGauge(*shared_, slot_, pool, delta, &Entry::waiting, &Row::waiting);
}

void SharedPools::addPinned(std::size_t pool, int delta) {
  addClientGauge(*shared_, slot_, pool, delta, &Entry::pinned_clients, &Row::pinned_clients);
}

std::uint32_t SharedPools::pinned(std::size_t pool) const {
  return shared_->entries[pool].pinned_clients.load(std::memory_order_relaxed);
}

std::uint32_t SharedPools::waiting(std::size_t pool) const {
  return shared_->entries[pool].waiting.load(std::memory_order_relaxed);
}

std::uint32_t SharedPools::myWaiting(std::size_t pool) const {
  return shared_->slots[slot_].rows[pool].waiting.load(std::memory_order_relaxed);
}

void SharedPools::countTransaction(std::size_t pool) {
  shared_->entries[pool].transactions.fetch_add(1, std::memory_order_relaxed);
}

void SharedPools::countQuery(std::size_t pool) {
  shared_->entries[pool].queries.fetch_add(1, std::memory_order_relaxed);
}

void SharedPools::observeWait(std::size_t pool, std::uint64_t us) {
  Entry& p = shared_->entries[pool];
  p.wait_buckets[metrics::bucketIndex(us)].fetch_add(1, std::memory_order_relaxed);
  p.wait_sum_us.fetch_add(us, std::memory_order_relaxed);
}

void SharedPools::foldSlot(std::size_t slot) {
  if (slot < kMaxWorkerSlots) {
    SlotView(*shared_, slot).fold();
  }
}

namespace {

struct Series {
  std::string labels;  // mapping, backend, user, database, escaped
  PoolSample sum;
};

std::string label(const char* key, std::string_view value) {
  return std::string(key) + "=\"" + metrics::escapeLabel(value) + "\"";
}

void sample(std::string& out, const char* name, const std::string& labels, std::uint64_t v) {
  out += name;
  out += '{';
  out += labels;
  out += "} ";
  out += std::to_string(v);
  out += '\n';
}

}  // namespace

std::vector<PoolSample> SharedPools::samples() const {
  std::vector<PoolSample> out;
  for (std::size_t e = 0; e < kMaxPools; ++e) {
    const IndexEntry& ix = shared_->index[e];
    const std::uint64_t w = ix.word.load(std::memory_order_acquire);
    if (stateOf(w) != kLive) {
      continue;
    }
    const Entry& en = shared_->entries[e];
    if (en.kind.load(std::memory_order_relaxed) != kPoolKind) {
      continue;
    }
    PoolSample s;
    s.mapping = labelText(en, kMappingLabel);
    s.backend = labelText(en, kBackendLabel);
    s.user = labelText(en, kUserLabel);
    s.database = labelText(en, kDatabaseLabel);
    for (std::size_t st = 0; st < kStates; ++st) {
      s.in_state[st] = en.in_state[st].load(std::memory_order_relaxed);
    }
    s.waiting = en.waiting.load(std::memory_order_relaxed);
    s.pinned = en.pinned_clients.load(std::memory_order_relaxed);
    s.transactions = en.transactions.load(std::memory_order_relaxed);
    s.queries = en.queries.load(std::memory_order_relaxed);
    for (std::size_t b = 0; b <= metrics::kBuckets; ++b) {
      s.wait_buckets[b] = en.wait_buckets[b].load(std::memory_order_relaxed);
    }
    s.wait_sum_us = en.wait_sum_us.load(std::memory_order_relaxed);
    std::atomic_thread_fence(std::memory_order_acquire);
    const std::uint64_t again = ix.word.load(std::memory_order_relaxed);
    if (stateOf(again) != kLive || incarnationOf(again) != incarnationOf(w)) {
      continue;  // freed, or freed and created again, while it was read
    }
    out.push_back(std::move(s));
  }
  return out;
}

std::uint64_t PoolSample::waits() const {
  std::uint64_t n = 0;
  for (std::uint64_t b : wait_buckets) {
    n += b;
  }
  return n;
}

void PoolSample::add(const PoolSample& o) {
  for (std::size_t st = 0; st < std::size(in_state); ++st) {
    in_state[st] += o.in_state[st];
  }
  waiting += o.waiting;
  pinned += o.pinned;
  transactions += o.transactions;
  queries += o.queries;
  for (std::size_t b = 0; b <= metrics::kBuckets; ++b) {
    wait_buckets[b] += o.wait_buckets[b];
  }
  wait_sum_us += o.wait_sum_us;
}

void SharedPools::render(std::string& out, unsigned max_pools) const {
  std::vector<Series> series;
  std::unordered_map<std::string, std::size_t> by_labels;  // the same labels: one series
  unsigned own = 0;
  for (PoolSample& s : samples()) {
    const bool folded = own >= max_pools;
    own += folded ? 0 : 1;
    std::string labels = label("mapping", s.mapping) + "," + label("backend", s.backend) + "," +
                         label("user", folded ? "other" : s.user) + "," +
                         label("database", folded ? "other" : s.database);
    auto [it, added] = by_labels.try_emplace(labels, series.size());
    if (added) {
      series.push_back(Series{std::move(labels), std::move(s)});
    } else {
      series[it->second].sum.add(s);
    }
  }

  static constexpr std::pair<ServerState, const char*> kStateNames[] = {
      {ServerState::kActive, "active"},
      {ServerState::kIdle, "idle"},
      {ServerState::kUsed, "used"},
      {ServerState::kLogin, "login"}};
  static_assert(std::size(kStateNames) == kStates);
  metrics::appendMetricHeader(out, "pgproxy_pool_server_connections");
  for (const Series& s : series) {
    for (auto [state, name] : kStateNames) {
      sample(out, "pgproxy_pool_server_connections", s.labels + "," + label("state", name),
             s.sum.in_state[static_cast<std::size_t>(state)]);
    }
  }
  metrics::appendMetricHeader(out, "pgproxy_pool_clients_waiting");
  for (const Series& s : series) {
    sample(out, "pgproxy_pool_clients_waiting", s.labels, s.sum.waiting);
  }
  metrics::appendMetricHeader(out, "pgproxy_pool_pinned_clients");
  for (const Series& s : series) {
    sample(out, "pgproxy_pool_pinned_clients", s.labels, s.sum.pinned);
  }
  metrics::appendMetricHeader(out, "pgproxy_pool_wait_seconds");
  for (const Series& s : series) {
    std::uint64_t cumulative = 0;
    for (std::size_t b = 0; b < metrics::kBuckets; ++b) {
      cumulative += s.sum.wait_buckets[b];
      char le[32];
      std::snprintf(le, sizeof(le), "%g", metrics::kBucketBounds[b]);
      sample(out, "pgproxy_pool_wait_seconds_bucket", s.labels + "," + label("le", le), cumulative);
    }
    cumulative += s.sum.wait_buckets[metrics::kBuckets];
    sample(out, "pgproxy_pool_wait_seconds_bucket", s.labels + "," + label("le", "+Inf"),
           cumulative);
    char sum[64];
    std::snprintf(sum, sizeof(sum), "%.17g", static_cast<double>(s.sum.wait_sum_us) / 1e6);
    out += "pgproxy_pool_wait_seconds_sum{" + s.labels + "} " + sum + "\n";
    sample(out, "pgproxy_pool_wait_seconds_count", s.labels, cumulative);
  }
  metrics::appendMetricHeader(out, "pgproxy_pool_transactions_total");
  for (const Series& s : series) {
    sample(out, "pgproxy_pool_transactions_total", s.labels, s.sum.transactions);
  }
  metrics::appendMetricHeader(out, "pgproxy_pool_queries_total");
  for (const Series& s : series) {
    sample(out, "pgproxy_pool_queries_total", s.labels, s.sum.queries);
  }
}

}  // namespace pgproxy::pool
