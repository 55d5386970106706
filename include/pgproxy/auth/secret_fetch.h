#pragma once

// auth_query, the I/O: one worker's lookups of the secrets of users who are not in the auth file.
// A lookup connects to a backend of the session's mapping (upstream::Connector: the backend's
// TLS as the mapping sets it, like the pool's server connections), runs the SecretQuery exchange
// (secret_lookup.h) and closes. What it finds is cached (auth.cache); logins of the same user
// while a lookup runs wait for that one lookup instead of starting their own.

#include <cstddef>
#include <cstdint>
#include <deque>
#include <memory>
#include <string>
#include <unordered_map>
#include <vector>

#include "pgproxy/auth/secret_lookup.h"

struct event;

namespace pgproxy::session {
struct Context;
}

namespace pgproxy::auth {

class SecretFetch;

// What a lookup found.
struct SecretAnswer {
  enum class Kind { kFound, kAbsent, kFailed } kind = Kind::kAbsent;
  std::shared_ptr<const UserSecret> secret;  // kFound
  std::string error;                         // kFailed: why, for the log
  // kFailed: 08006 when no backend could be reached, 28000 when a backend refused auth.user or
  // the query failed.
  const char* sqlstate = nullptr;
};

// One login waiting for a lookup. The waiter owns it; the lookups link it while it waits.
struct SecretWait {
  using Done = void (*)(void* owner, SecretAnswer answer);
  Done done = nullptr;
  void* owner = nullptr;
  // Kept by SecretLookups.
  SecretFetch* fetch = nullptr;
  SecretWait* next = nullptr;
  SecretWait* prev = nullptr;
};

class SecretLookups {
 public:
  // Connections one worker opens for lookups at once; more lookups queue. A flood of logins
  // with made-up names then costs the backend at most this many connections per worker.
  static constexpr std::size_t kMaxRunning = 4;

  explicit SecretLookups(session::Context& ctx);
  ~SecretLookups();  // ends the lookups under way; no wait may be linked any more
  SecretLookups(const SecretLookups&) = delete;
  SecretLookups& operator=(const SecretLookups&) = delete;

  // The secret of `user` for a session of `mapping` whose backends are `backends` (bit i: the
  // mapping's backends[i]; a route's, or the mapping's own), asked of those backends and cached
  // for them. True when the cache answers (`answer` is set); otherwise `wait` is linked and
  // wait.done() is called once the lookup ends, never from inside this call.
  bool lookup(std::size_t mapping, std::uint64_t backends, const std::string& user,
              SecretWait& wait, SecretAnswer& answer);
  // The waiter leaves (its session closed); a no-op for a wait that is not linked.
  void cancel(SecretWait& wait);

  // From SecretFetch: the lookup ended (the fetch is freed once the loop is back).
  void finished(SecretFetch* fetch, SecretAnswer answer);
  session::Context& ctx() { return ctx_; }

 private:
  static void onReap(int fd, short what, void* arg);
  void startQueued();

  session::Context& ctx_;
  SecretCache cache_;
  // Lookups under way or queued, by cache key (mapping, backends and user).
  std::unordered_map<std::string, std::unique_ptr<SecretFetch>> fetches_;
  std::deque<SecretFetch*> queue_;
  std::size_t running_ = 0;
  std::vector<std::unique_ptr<SecretFetch>> dead_;
  event* reaper_ = nullptr;
};

}  // namespace pgproxy::auth
