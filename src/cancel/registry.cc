#include "pgproxy/cancel/registry.h"

#include <cstring>

namespace pgproxy::cancel {
namespace {

// FNV-1a: spreads keys over the 64 bits cheaply. Only a filter: matches are compared byte by byte.
std::uint64_t keyHash(std::string_view key) {
  std::uint64_t h = 14695981039346656037ull;
  for (char c : key) {
    h = (h ^ static_cast<unsigned char>(c)) * 1099511628211ull;
  }
  return h;
}

// Looks at every byte whatever the earlier ones held, like PostgreSQL's check of a cancel key, so
// the time a lookup takes says nothing about how much of a guessed key was right.
bool sameKey(const unsigned char* a, std::string_view b) {
  unsigned diff = 0;
  for (std::size_t i = 0; i < b.size(); ++i) {
    diff |= a[i] ^ static_cast<unsigned char>(b[i]);
  }
  return diff == 0;
}

}  // namespace

socklen_t addrLen(const BackendAddr& a) {
  return a.sa.sa_family == AF_INET6 ? sizeof(sockaddr_in6) : sizeof(sockaddr_in);
}

std::size_t Registry::bytesNeeded() {
  return sizeof(Slot) * kSlots + kMaxKey * kSlots;
}

Registry::Registry(void* memory)
    : slots_(static_cast<Slot*>(memory)),
      keys_(reinterpret_cast<unsigned char (*)[kMaxKey]>(static_cast<char*>(memory) +
                                                         sizeof(Slot) * kSlots)) {
  static_assert(std::atomic<std::int32_t>::is_always_lock_free,
                "cross-process atomics must be lock free");
}

int Registry::claim(std::int32_t owner) {
  for (std::size_t i = 0; i < kSlots; ++i) {
    std::int32_t expected = 0;
    if (slots_[i].owner.load(std::memory_order_relaxed) == 0 &&
        slots_[i].owner.compare_exchange_strong(expected, owner, std::memory_order_acq_rel)) {
      return static_cast<int>(i);
    }
  }
  return -1;
}

template <typename Fn>
void Registry::write(int slot, Fn fn) {
  Slot& s = slots_[slot];
  s.seq.fetch_add(1, std::memory_order_acq_rel);  // odd: readers skip
  std::atomic_thread_fence(std::memory_order_release);
  fn(s);
  std::atomic_thread_fence(std::memory_order_release);
  s.seq.fetch_add(1, std::memory_order_acq_rel);
}

template <typename Fn>
bool Registry::read(std::size_t slot, Fn fn) const {
  const Slot& s = slots_[slot];
  if (s.owner.load(std::memory_order_acquire) == 0) {
    return false;
  }
  std::uint32_t before = s.seq.load(std::memory_order_acquire);
  if (before & 1) {
    return false;
  }
  Slot copy;
  copy.kind = s.kind;
  copy.proxy_header = s.proxy_header;
  std::memcpy(&copy.client, &s.client, sizeof(copy.client));
  std::memcpy(&copy.backend, &s.backend, sizeof(copy.backend));
  std::atomic_thread_fence(std::memory_order_acquire);
  if (s.seq.load(std::memory_order_acquire) != before) {
    return false;
  }
  return fn(copy);
}

void Registry::publishKey(int slot, std::uint32_t pid, std::string_view key,
                          const BackendAddr& backend, bool proxy_header) {
  if (key.empty() || key.size() > kMaxKey) {
    return;
  }
  write(slot, [&](Slot& s) {
    s.kind = kKeyed;
    s.proxy_header = proxy_header ? 1 : 0;
    s.pid = pid;
    s.key_len = static_cast<std::uint32_t>(key.size());
    s.key_hash = keyHash(key);
    std::memcpy(keys_[slot], key.data(), key.size());
    s.backend = backend;
  });
}

void Registry::publishPooled(int slot, std::uint32_t pid, std::string_view key, bool proxy_header) {
  if (slot < 0 || key.empty() || key.size() > kMaxKey) {
    return;
  }
  write(slot, [&](Slot& s) {
    s.kind = kPooled;
    s.proxy_header = proxy_header ? 1 : 0;
    s.pid = pid;
    s.key_len = static_cast<std::uint32_t>(key.size());
    s.key_hash = keyHash(key);
    std::memcpy(keys_[slot], key.data(), key.size());
    std::memset(&s.backend, 0, sizeof(s.backend));
  });
}

void Registry::linkPooled(int slot, const BackendAddr& server, std::uint32_t server_pid,
                          std::uint32_t server_key) {
  if (slot < 0) {
    return;
  }
  write(slot, [&](Slot& s) {
    s.backend = server;
    s.server_pid = server_pid;
    s.server_key = server_key;
  });
}

void Registry::unlinkPooled(int slot) {
  if (slot < 0) {
    return;
  }
  write(slot, [&](Slot& s) { std::memset(&s.backend, 0, sizeof(s.backend)); });
}

void Registry::publishPassthrough(int slot, const in6_addr& client, const BackendAddr& backend,
                                  bool proxy_header) {
  write(slot, [&](Slot& s) {
    s.kind = kPassthrough;
    s.proxy_header = proxy_header ? 1 : 0;
    s.client = client;
    s.backend = backend;
  });
}

void Registry::release(int slot) {
  if (slot < 0) {
    return;
  }
  write(slot, [](Slot& s) { s.kind = kEmpty; });
  slots_[slot].owner.store(0, std::memory_order_release);
}

void Registry::releaseOwner(std::int32_t owner) {
  for (std::size_t i = 0; i < kSlots; ++i) {
    if (slots_[i].owner.load(std::memory_order_acquire) == owner) {
      // The owner is dead, so nobody else writes this slot now.
      slots_[i].kind = kEmpty;
      slots_[i].seq.store(0, std::memory_order_release);
      slots_[i].owner.store(0, std::memory_order_release);
    }
  }
}

bool Registry::findByKey(std::uint32_t pid, std::string_view key, Target& out) const {
  if (key.empty() || key.size() > kMaxKey) {
    return false;
  }
  const std::uint64_t hash = keyHash(key);
  for (std::size_t i = 0; i < kSlots; ++i) {
    const Slot& s = slots_[i];
    if (s.owner.load(std::memory_order_acquire) == 0) {
      continue;
    }
    std::uint32_t before = s.seq.load(std::memory_order_acquire);
    if (before & 1) {
      continue;
    }
    // Torn values are possible here; they are only trusted once the sequence is seen unchanged.
    if ((s.kind != kKeyed && s.kind != kPooled) || s.pid != pid || s.key_len != key.size() ||
        s.key_hash != hash) {
      continue;
    }
    unsigned char stored[kMaxKey];
    std::memcpy(stored, keys_[i], key.size());
    Target target;
    std::memcpy(&target.backend, &s.backend, sizeof(target.backend));
    target.pooled = s.kind == kPooled;
    target.proxy_header = s.proxy_header != 0;
    target.server_pid = s.server_pid;
    target.server_key = s.server_key;
    std::atomic_thread_fence(std::memory_order_acquire);
    if (s.seq.load(std::memory_order_acquire) != before) {
      continue;
    }
    if (sameKey(stored, key)) {
      target.linked = !target.pooled || target.backend.sa.sa_family != AF_UNSPEC;
      out = target;
      return true;
    }
  }
  return false;
}

std::size_t Registry::findByClient(const in6_addr& client, BackendAddr* out, std::size_t max,
                                   bool* proxy_header) const {
  std::size_t n = 0;
  for (std::size_t i = 0; i < kSlots && n < max; ++i) {
    read(i, [&](const Slot& s) {
      if (s.kind != kPassthrough || std::memcmp(&s.client, &client, sizeof(client)) != 0) {
        return false;
      }
      for (std::size_t j = 0; j < n; ++j) {
        if (addrLen(out[j]) == addrLen(s.backend) &&
            std::memcmp(&out[j], &s.backend, addrLen(s.backend)) == 0) {
          return false;  // one cancel per backend is enough
        }
      }
      if (proxy_header) {
        proxy_header[n] = s.proxy_header != 0;
      }
      out[n++] = s.backend;
      return true;
    });
  }
  return n;
}

}  // namespace pgproxy::cancel
