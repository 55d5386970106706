#pragma once

#include <netinet/in.h>

#include <atomic>
#include <cstddef>
#include <cstdint>
#include <string_view>

namespace pgproxy::cancel {

// A backend address as seen by getpeername(): IPv4 or IPv6.
union BackendAddr {
  sockaddr sa;
  sockaddr_in v4;
  sockaddr_in6 v6;
};
socklen_t addrLen(const BackendAddr& a);

// The process id pgproxy gives a client in the BackendKeyData it issues (pooled sessions): random
// bits, with this instance's id (instance_id, 1..127) in bits 24..30 when it has one, so that any
// instance of a service knows which one holds the session. A PostgreSQL pid is below 2^22
// (Linux's pid_max), so it never reads as an instance's.
inline std::uint32_t issuedPid(std::uint32_t random, unsigned instance_id) {
  return instance_id == 0 ? random & 0x7fffffff
                          : ((instance_id & 0x7f) << 24) | (random & 0x00ffffff);
}
// The instance id a CancelRequest's pid carries; 0: none (a PostgreSQL pid, or no instance ids).
inline unsigned instanceOfPid(std::uint32_t pid) {
  return (pid >> 24) & 0x7f;
}

// Which live session a CancelRequest may be meant for. Lives in memory shared by all workers (the
// master maps it before forking), so a cancel accepted by any worker finds a session on any other.
//
// Each slot is written only by the session that claimed it; readers use the sequence number
// (seqlock) to skip slots that change under them. A crashed worker's slots are swept by the master.
//
// Secret keys are 4 bytes up to protocol 3.0 and up to 256 from 3.2. Each slot keeps the whole key,
// exactly, in a separate array, so that the scan of a lookup reads only the small slot headers
// (pid, key length, key hash) and touches a key's bytes only where all three already match.
class Registry {
 public:
  static constexpr std::size_t kSlots = 16384;
  static constexpr std::size_t kMaxKey = 256;
  static std::size_t bytesNeeded();

  // `memory` must be bytesNeeded() zeroed bytes, shared between the processes that use it.
  explicit Registry(void* memory);

  // Returns a slot index, or -1 when the table is full (the session then just can't be cancelled
  // by key).
  int claim(std::int32_t owner);
  // A plaintext session whose BackendKeyData we saw: cancels are forwarded exactly. `key` is
  // 1 to kMaxKey bytes (longer is not stored: that session can't be cancelled by key).
  // `proxy_header` (every publish): the backend expects a PROXY protocol header first
  // (backend_proxy_protocol), so a cancel forwarded to it sends one.
  void publishKey(int slot, std::uint32_t pid, std::string_view key, const BackendAddr& backend,
                  bool proxy_header = false);
  // A TLS passthrough session: the key is inside TLS, so only the client's address is known.
  void publishPassthrough(int slot, const in6_addr& client, const BackendAddr& backend,
                          bool proxy_header = false);
  void release(int slot);
  // Frees every slot a dead worker held.
  void releaseOwner(std::int32_t owner);

  // A pooled client: pgproxy issued it (pid, key); its cancels go to the server it is linked to
  // at the time, with that server's own key, and nowhere while it has none.
  void publishPooled(int slot, std::uint32_t pid, std::string_view key, bool proxy_header = false);
  void linkPooled(int slot, const BackendAddr& server, std::uint32_t server_pid,
                  std::uint32_t server_key);
  void unlinkPooled(int slot);

  struct Target {
    BackendAddr backend;
    bool pooled = false;  // send a CancelRequest with server_pid/server_key, not the client's
    bool linked = true;   // pooled: false when the client has no server now (nothing to cancel)
    std::uint32_t server_pid = 0, server_key = 0;
    bool proxy_header = false;
  };
  // The backend of the session with exactly this pid and key (same length, same bytes).
  bool findByKey(std::uint32_t pid, std::string_view key, Target& out) const;
  // Fills up to `max` distinct backends of passthrough sessions from `client`; returns the count.
  // `proxy_header` (if given, `max` entries): whether each backend expects a PROXY header.
  std::size_t findByClient(const in6_addr& client, BackendAddr* out, std::size_t max,
                           bool* proxy_header = nullptr) const;

 private:
  enum Kind : std::uint32_t { kEmpty = 0, kKeyed = 1, kPassthrough = 2, kPooled = 3 };
  struct Slot {
    std::atomic<std::int32_t> owner;  // 0: free, else the owning process id
    std::atomic<std::uint32_t> seq;   // odd while being written
    std::uint32_t kind;
    std::uint32_t pid;
    std::uint32_t key_len;
    std::uint32_t proxy_header;  // 1: the backend expects a PROXY protocol header
    std::uint64_t key_hash;      // filters the scan; a match is then checked on the bytes
    in6_addr client;
    BackendAddr backend;                   // kPooled: sa_family AF_UNSPEC while not linked
    std::uint32_t server_pid, server_key;  // kPooled
  };
  template <typename Fn>
  void write(int slot, Fn fn);
  template <typename Fn>
  bool read(std::size_t slot, Fn fn) const;

  Slot* slots_;
  unsigned char (*keys_)[kMaxKey];  // keys_[i]: slot i's key, after the slot array
};

}  // namespace pgproxy::cancel
