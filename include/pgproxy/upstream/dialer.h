#pragma once

// Connecting to a backend by name without blocking the event loop, trying every address the name
// resolves to in turn, as libpq does for a host with several addresses.

#include <event2/util.h>  // evutil_addrinfo may be a macro for addrinfo
#include <sys/socket.h>

#include <cstddef>
#include <string>

struct evdns_base;
struct evdns_getaddrinfo_request;

namespace pgproxy::upstream {

// The stream addresses of one backend, in the resolver's order.
class AddressList {
 public:
  // Enough for any dual-stack host; more are dropped (logged by the caller through size()).
  static constexpr std::size_t kMax = 8;

  // Takes getaddrinfo's answer: stream entries only, duplicates dropped, at most kMax.
  void assign(const evutil_addrinfo* ai);
  std::size_t size() const { return count_; }
  bool exhausted() const { return next_ >= count_; }
  // The next address to try (advancing), or nullptr when every one has been tried.
  const sockaddr* next(socklen_t* len);
  // "ADDR:PORT" of the address next() returned last.
  std::string current() const;

 private:
  sockaddr_storage addr_[kMax];
  socklen_t len_[kMax];
  std::size_t count_ = 0;
  std::size_t next_ = 0;
};

// An asynchronous name lookup whose owner may go away before the answer: cancel() detaches the
// owner, and the resolver's late callback then only frees the lookup.
class Lookup {
 public:
  using Done = void (*)(void* owner, int gai_error, const evutil_addrinfo* ai);

  // Starts resolving host:port and stores the lookup in *slot. `done` may run before start()
  // returns; *slot is null again before `done` runs, so the owner may free itself in `done`.
  static void start(Lookup** slot, evdns_base* dns, const std::string& host, int port, Done done,
                    void* owner);
  // Forgets the owner (and *slot) and cancels the lookup.
  void cancel();

 private:
  Lookup(Lookup** slot, Done done, void* owner) : slot_(slot), done_(done), owner_(owner) {}
  static void onResult(int err, evutil_addrinfo* ai, void* arg);

  Lookup** slot_;
  Done done_;
  void* owner_;
  evdns_getaddrinfo_request* request_ = nullptr;
  bool starting_ = true;
  bool finished_ = false;
};

}  // namespace pgproxy::upstream
