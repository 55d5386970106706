#include "pgproxy/upstream/backend_table.h"

#include <algorithm>
#include <cstring>

#include "pgproxy/base/clock.h"

namespace pgproxy::upstream {

const char* healthName(Health h) {
  switch (h) {
    case Health::kUp:
      return "up";
    case Health::kDown:
      return "down";
    case Health::kUnknown:
      break;
  }
  return "unknown";
}

std::size_t BackendTable::find(const std::string& key) const {
  std::size_t n = count();
  for (std::size_t i = 0; i < n; ++i) {
    if (key == shared_->slots[i].key) {
      return i;
    }
  }
  return kNoBackend;
}

std::size_t BackendTable::registerBackend(const std::string& key) {
  if (std::size_t i = find(key); i != kNoBackend) {
    return i;
  }
  std::size_t n = count();
  if (n >= kMaxBackends || key.size() >= sizeof(shared_->slots[0].key)) {
    return kNoBackend;
  }
  BackendSlot& s = shared_->slots[n];
  std::memcpy(s.key, key.c_str(), key.size() + 1);
  s.health.store(static_cast<std::int32_t>(Health::kUnknown));
  s.lag_ms.store(-1);
  shared_->count.store(static_cast<std::uint32_t>(n + 1), std::memory_order_release);
  return n;
}

base::Status BackendTable::fits(const std::vector<std::string>& keys) const {
  std::size_t fresh = 0;
  for (std::size_t i = 0; i < keys.size(); ++i) {
    bool seen = find(keys[i]) != kNoBackend;
    for (std::size_t j = 0; j < i && !seen; ++j) {
      seen = keys[j] == keys[i];
    }
    fresh += seen ? 0 : 1;
  }
  if (count() + fresh > kMaxBackends) {
    return base::Error{"the configuration needs " + std::to_string(fresh) +
                       " new backend(s), and " + std::to_string(count()) + " of the " +
                       std::to_string(kMaxBackends) +
                       " backend slots (health, role, least_conn) are taken by the backends this "
                       "master has served since it started, including removed ones; a restart "
                       "frees the slots of removed backends"};
  }
  return {};
}

Health BackendTable::health(std::size_t i) const {
  return i < count() ? static_cast<Health>(shared_->slots[i].health.load()) : Health::kUnknown;
}

std::int64_t BackendTable::active(std::size_t i) const {
  return i < count() ? shared_->slots[i].active.load(std::memory_order_relaxed) : 0;
}

int BackendTable::lastErrno(std::size_t i) const {
  return i < count() ? shared_->slots[i].last_errno.load(std::memory_order_relaxed) : 0;
}

std::string BackendTable::key(std::size_t i) const {
  return i < count() ? shared_->slots[i].key : "";
}

void BackendTable::addActive(std::size_t i, int delta) {
  if (i < count()) {
    shared_->slots[i].active.fetch_add(delta, std::memory_order_relaxed);
  }
}

bool BackendTable::transition(std::size_t i, Health to) {
  auto& h = shared_->slots[i].health;
  std::int32_t cur = h.load();
  while (cur != static_cast<std::int32_t>(to)) {
    if (to == Health::kDown) {
      shared_->slots[i].down_since_ms.store(base::monotonicMs());
    }
    if (h.compare_exchange_weak(cur, static_cast<std::int32_t>(to))) {
      // Only a change between up and down is news; unknown -> up is the first sighting.
      return static_cast<Health>(cur) != Health::kUnknown || to == Health::kDown;
    }
  }
  return false;
}

bool BackendTable::recordFailure(std::size_t i, unsigned fall, int err, std::string_view why) {
  if (i >= count()) {
    return false;
  }
  setLastError(i, why);
  BackendSlot& s = shared_->slots[i];
  s.last_errno.store(err, std::memory_order_relaxed);
  s.passes.store(0);
  std::int32_t fails = s.fails.fetch_add(1) + 1;
  return fails >= static_cast<std::int32_t>(fall) && transition(i, Health::kDown);
}

bool BackendTable::recordCheckSuccess(std::size_t i, unsigned rise) {
  if (i >= count()) {
    return false;
  }
  BackendSlot& s = shared_->slots[i];
  s.fails.store(0);
  std::int32_t passes = s.passes.fetch_add(1) + 1;
  bool up = health(i) == Health::kUnknown || passes >= static_cast<std::int32_t>(rise);
  return up && transition(i, Health::kUp);
}

bool BackendTable::retryDue(std::size_t i, std::uint64_t now_ms, std::uint64_t after_ms) const {
  return i < count() && now_ms - shared_->slots[i].down_since_ms.load() >= after_ms;
}

Role BackendTable::role(std::size_t i) const {
  return i < count() ? static_cast<Role>(shared_->slots[i].role.load()) : Role::kUnknown;
}

std::int64_t BackendTable::lagMs(std::size_t i) const {
  return i < count() ? shared_->slots[i].lag_ms.load(std::memory_order_relaxed) : -1;
}

void BackendTable::setLag(std::size_t i, std::int64_t ms) {
  if (i < count()) {
    shared_->slots[i].lag_ms.store(ms, std::memory_order_relaxed);
  }
}

Role BackendTable::setRole(std::size_t i, Role r) {
  return i < count()
             ? static_cast<Role>(shared_->slots[i].role.exchange(static_cast<std::int32_t>(r)))
             : Role::kUnknown;
}

std::string BackendTable::lastError(std::size_t i) const {
  if (i >= count()) {
    return "";
  }
  const BackendSlot& s = shared_->slots[i];
  for (int attempt = 0; attempt < 3; ++attempt) {
    std::uint32_t seq = s.error_seq.load(std::memory_order_acquire);
    if (seq & 1) {
      continue;
    }
    std::string text = s.error.load();
    std::atomic_thread_fence(std::memory_order_acquire);
    if (s.error_seq.load(std::memory_order_relaxed) == seq) {
      return text;
    }
  }
  return "";
}

void BackendTable::setLastError(std::size_t i, std::string_view text) {
  if (i >= count()) {
    return;
  }
  BackendSlot& s = shared_->slots[i];
  std::uint32_t seq = s.error_seq.load(std::memory_order_relaxed);
  if ((seq & 1) || !s.error_seq.compare_exchange_strong(seq, seq + 1)) {
    return;
  }
  s.error.store(text);
  s.error_seq.store(seq + 2, std::memory_order_release);
}

void BackendTable::noteCheck(std::size_t i, std::uint64_t unix_ms) {
  if (i < count()) {
    shared_->slots[i].last_check_ms.store(unix_ms, std::memory_order_relaxed);
  }
}

std::uint64_t BackendTable::lastCheckMs(std::size_t i) const {
  return i < count() ? shared_->slots[i].last_check_ms.load(std::memory_order_relaxed) : 0;
}

bool BackendTable::recordSessionSuccess(std::size_t i, bool checked) {
  if (i >= count()) {
    return false;
  }
  shared_->slots[i].fails.store(0);
  if (checked && health(i) == Health::kDown) {
    return false;  // the checker's rise rule decides when it is back
  }
  return transition(i, Health::kUp);
}

std::vector<metrics::BackendSample> sampleBackends(
    const config::Config& cfg, const BackendTable& table,
    const std::vector<std::vector<std::size_t>>& slots) {
  std::vector<metrics::BackendSample> out;
  for (std::size_t m = 0; m < cfg.mappings.size() && m < slots.size(); ++m) {
    const auto& mapping = cfg.mappings[m];
    for (std::size_t b = 0; b < mapping.backends.size() && b < slots[m].size(); ++b) {
      metrics::BackendSample s;
      s.mapping = m;
      s.mapping_name = mapping.external;
      s.backend = mapping.backends[b].key();
      s.down = table.health(slots[m][b]) == Health::kDown;
      s.last_errno = table.lastErrno(slots[m][b]);
      s.active = table.active(slots[m][b]);
      s.lag_ms = table.lagMs(slots[m][b]);
      out.push_back(std::move(s));
    }
  }
  return out;
}

std::vector<std::vector<std::size_t>> backendSlots(const config::Config& cfg,
                                                   const BackendTable& table) {
  std::vector<std::vector<std::size_t>> out;
  for (const auto& m : cfg.mappings) {
    out.emplace_back();
    for (const auto& b : m.backends) {
      out.back().push_back(table.find(b.key()));
    }
  }
  return out;
}

}  // namespace pgproxy::upstream
