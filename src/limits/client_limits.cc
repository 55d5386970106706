#include "pgproxy/limits/client_limits.h"

#include <cstring>

namespace pgproxy::limits {
namespace {

constexpr std::size_t kCountMask = kCountEntries - 1;
constexpr std::size_t kBucketMask = kBucketEntries - 1;
static_assert((kCountEntries & kCountMask) == 0 && (kBucketEntries & kBucketMask) == 0);

// splitmix64's finalizer: with the master's random seed mixed in, a client cannot choose
// addresses that land in another client's bucket window or lengthen a probe chain on purpose.
std::uint64_t mix(std::uint64_t x) {
  x ^= x >> 30;
  x *= 0xbf58476d1ce4e5b9ull;
  x ^= x >> 27;
  x *= 0x94d049bb133111ebull;
  x ^= x >> 31;
  return x;
}

void split(const in6_addr& a, std::uint64_t& hi, std::uint64_t& lo) {
  std::memcpy(&hi, a.s6_addr, 8);
  std::memcpy(&lo, a.s6_addr + 8, 8);
}

constexpr std::uint64_t pack(std::uint64_t milli_tokens, std::uint32_t ms) {
  return milli_tokens << 32 | ms;
}

}  // namespace

bool takeToken(std::uint64_t& bucket, std::uint32_t now_ms, const Rate& rate,
               std::uint32_t* wait_ms) {
  const std::uint64_t cap = static_cast<std::uint64_t>(rate.burst ? rate.burst : 1) * 1000;
  std::uint64_t tokens = cap;
  if (bucket != 0) {
    tokens = bucket >> 32;
    std::uint32_t elapsed = now_ms - static_cast<std::uint32_t>(bucket);
    if (elapsed >= 0x80000000u) {
      tokens = cap;  // untouched for weeks (or the wrapped clock says so): full either way
    } else {
      tokens += static_cast<std::uint64_t>(elapsed) * rate.count * 1000 / rate.period_ms;
    }
    tokens = tokens > cap ? cap : tokens;
  }
  bool ok = tokens >= 1000;
  if (ok) {
    tokens -= 1000;
  } else if (wait_ms) {
    std::uint64_t per_token_ms =
        (static_cast<std::uint64_t>(rate.period_ms) + rate.count - 1) / rate.count;  // rounded up
    *wait_ms = static_cast<std::uint32_t>((1000 - tokens) * per_token_ms / 1000 + 1);
  }
  bucket = pack(tokens, now_ms);
  if (bucket == 0) {
    bucket = 1;  // 0 means "full"; an empty bucket a millisecond older is the same thing
  }
  return ok;
}

void ClientLimits::release(std::int32_t owner) {
  for (auto& w : shared_->workers) {
    if (w.owner.load(std::memory_order_acquire) != owner) {
      continue;
    }
    for (auto& e : w.entries) {
      if (w.used.load(std::memory_order_relaxed) == 0) {
        break;  // the usual case: a worker that exited has closed every session
      }
      if (e.hi.load(std::memory_order_relaxed) != 0 || e.lo.load(std::memory_order_relaxed) != 0) {
        w.used.fetch_sub(1, std::memory_order_relaxed);  // a crashed worker's session
      }
      e.hi.store(0, std::memory_order_relaxed);
      e.lo.store(0, std::memory_order_relaxed);
      e.sessions.store(0, std::memory_order_relaxed);
    }
    w.used.store(0, std::memory_order_relaxed);
    w.owner.store(0, std::memory_order_release);
  }
}

std::size_t ClientLimits::reserve(std::int32_t holder) {
  for (std::size_t i = 0; i < kMaxWorkers; ++i) {
    std::int32_t expected = 0;
    if (shared_->workers[i].owner.compare_exchange_strong(expected, holder,
                                                          std::memory_order_acq_rel)) {
      return i;
    }
  }
  return kNoTable;
}

void ClientLimits::assign(std::size_t i, std::int32_t owner) {
  shared_->workers[i].owner.store(owner, std::memory_order_release);
}

void ClientLimits::unreserve(std::size_t i) {
  shared_->workers[i].owner.store(0, std::memory_order_release);
}

std::size_t ClientLimits::freeTables() const {
  std::size_t n = 0;
  for (const auto& w : shared_->workers) {
    n += w.owner.load(std::memory_order_acquire) == 0 ? 1 : 0;
  }
  return n;
}

std::int32_t ClientLimits::tableOwner(std::size_t i) const {
  return shared_->workers[i].owner.load(std::memory_order_acquire);
}

bool ClientLimits::claim(std::int32_t owner) {
  std::size_t i = reserve(owner);
  if (i == kNoTable) {
    return false;
  }
  attach(i);
  return true;
}

std::size_t ClientLimits::home(std::uint64_t hi, std::uint64_t lo) const {
  return mix(shared_->seed ^ mix(hi ^ mix(lo))) & kCountMask;
}

CountEntry* ClientLimits::find(WorkerCounts& w, std::uint64_t hi, std::uint64_t lo) const {
  std::size_t first = home(hi, lo);
  for (std::size_t i = 0; i < kMaxProbe; ++i) {
    CountEntry& e = w.entries[(first + i) & kCountMask];
    std::uint64_t eh = e.hi.load(std::memory_order_acquire);
    std::uint64_t el = e.lo.load(std::memory_order_acquire);
    if (eh == hi && el == lo) {
      return &e;
    }
    if (eh == 0 && el == 0) {
      return nullptr;
    }
  }
  return nullptr;
}

std::uint32_t ClientLimits::sessions(const in6_addr& client) const {
  std::uint64_t hi, lo;
  split(client, hi, lo);
  std::uint32_t sum = 0;
  for (auto& w : shared_->workers) {
    if (w.owner.load(std::memory_order_acquire) == 0) {
      continue;
    }
    if (CountEntry* e = find(w, hi, lo)) {
      sum += e->sessions.load(std::memory_order_relaxed);
    }
  }
  return sum;
}

bool ClientLimits::addSession(const in6_addr& client) {
  if (!mine_) {
    return false;
  }
  std::uint64_t hi, lo;
  split(client, hi, lo);
  std::size_t first = home(hi, lo);
  for (std::size_t i = 0; i < kMaxProbe; ++i) {
    CountEntry& e = mine_->entries[(first + i) & kCountMask];
    std::uint64_t eh = e.hi.load(std::memory_order_relaxed);
    std::uint64_t el = e.lo.load(std::memory_order_relaxed);
    if (eh == hi && el == lo) {
      e.sessions.fetch_add(1, std::memory_order_relaxed);
      return true;
    }
    if (eh == 0 && el == 0) {
      // The count first: a reader that sees the key sees a count that belongs to it.
      mine_->used.fetch_add(1, std::memory_order_relaxed);
      e.sessions.store(1, std::memory_order_relaxed);
      e.lo.store(lo, std::memory_order_release);
      e.hi.store(hi, std::memory_order_release);
      return true;
    }
  }
  return false;
}

void ClientLimits::removeSession(const in6_addr& client) {
  if (!mine_) {
    return;
  }
  std::uint64_t hi, lo;
  split(client, hi, lo);
  CountEntry* e = find(*mine_, hi, lo);
  if (!e) {
    return;  // not counted (the table was full when it arrived)
  }
  if (e->sessions.load(std::memory_order_relaxed) > 1) {
    e->sessions.fetch_sub(1, std::memory_order_relaxed);
    return;
  }
  // Backward-shift deletion keeps probe chains short without tombstones. An entry moves by being
  // copied into the hole before its old place is reused, so a concurrent reader may count it
  // twice for a moment but never misses it.
  std::size_t hole = static_cast<std::size_t>(e - mine_->entries);
  for (std::size_t j = (hole + 1) & kCountMask;; j = (j + 1) & kCountMask) {
    CountEntry& next = mine_->entries[j];
    std::uint64_t nh = next.hi.load(std::memory_order_relaxed);
    std::uint64_t nl = next.lo.load(std::memory_order_relaxed);
    if (nh == 0 && nl == 0) {
      break;
    }
    // `next` may fill the hole when its home is not cyclically within (hole, j].
    bool movable = ((j - home(nh, nl)) & kCountMask) >= ((j - hole) & kCountMask);
    if (movable) {
      CountEntry& h = mine_->entries[hole];
      h.sessions.store(next.sessions.load(std::memory_order_relaxed), std::memory_order_relaxed);
      h.lo.store(nl, std::memory_order_release);
      h.hi.store(nh, std::memory_order_release);
      hole = j;
    }
  }
  mine_->used.fetch_sub(1, std::memory_order_relaxed);
  CountEntry& h = mine_->entries[hole];
  h.hi.store(0, std::memory_order_release);
  h.lo.store(0, std::memory_order_release);
  h.sessions.store(0, std::memory_order_relaxed);
}

std::uint64_t ClientLimits::bucketKey(const in6_addr& client, std::uint32_t scope) const {
  std::uint64_t hi, lo;
  split(client, hi, lo);
  std::uint64_t k = mix(mix(mix(shared_->seed ^ hi) ^ lo) ^ scope);
  return k ? k : 1;
}

bool ClientLimits::takeToken(const in6_addr& client, std::uint32_t scope, const Rate& rate,
                             std::uint32_t now_ms, std::uint32_t* wait_ms) {
  std::uint64_t key = bucketKey(client, scope);
  std::size_t first = key & kBucketMask;
  BucketEntry* entry = nullptr;
  BucketEntry* victim = nullptr;
  std::uint64_t victim_key = 0;
  std::uint32_t victim_age = 0;
  for (std::size_t i = 0; i < kBucketWindow && !entry; ++i) {
    BucketEntry& e = shared_->buckets[(first + i) & kBucketMask];
    std::uint64_t k = e.key.load(std::memory_order_acquire);
    if (k == key) {
      entry = &e;
    } else if (victim_key != 0 || !victim) {
      // Prefer an empty entry, else the least recently used one.
      std::uint32_t age = now_ms - static_cast<std::uint32_t>(e.bucket.load());
      if (!victim || k == 0 || age > victim_age) {
        victim = &e;
        victim_key = k;
        victim_age = age;
      }
    }
  }
  if (!entry) {
    // Reset first: a lost race then at worst hands some client a full bucket (fail open).
    victim->bucket.store(0);
    std::uint64_t expected = victim_key;
    if (!victim->key.compare_exchange_strong(expected, key) && expected != key) {
      return true;
    }
    entry = victim;
  }
  std::uint64_t b = entry->bucket.load();
  while (true) {
    std::uint64_t nb = b;
    bool ok = limits::takeToken(nb, now_ms, rate, wait_ms);
    if (entry->bucket.compare_exchange_weak(b, nb)) {
      return ok;
    }
  }
}

}  // namespace pgproxy::limits
