#pragma once

// Opens a connection to one backend without blocking the loop: resolve the name, try each address
// in turn, then (for a TLS backend) the SSLRequest and the TLS handshake. The pool's server
// connections use it; the result is a connected socket, with its TLS session when there is one.

#include <cstdint>
#include <memory>
#include <string>

#include "pgproxy/upstream/dialer.h"

struct event_base;
struct event;
struct evdns_base;
typedef struct ssl_st SSL;
typedef struct ssl_ctx_st SSL_CTX;

namespace pgproxy::config {
struct Config;
struct Mapping;
struct Backend;
}  // namespace pgproxy::config

namespace pgproxy::upstream {

struct ConnectTarget {
  std::string host;
  int port = 5432;
  SSL_CTX* tls = nullptr;    // nullptr: plaintext
  std::string tls_name;      // SNI and the name verify-full checks
  bool verify_name = false;  // backend_tls: verify-full
  std::string preamble;      // sent first once connected (a PROXY protocol header)
};

// The backend leg of pgproxy's own connections (pools, auth.query) to backend `b` of mapping `m`:
// TLS with `tls` (the mapping's backend context, nullptr for plaintext), its name, and the LOCAL
// PROXY header when the mapping sends them.
ConnectTarget ownConnection(const config::Mapping& m, const config::Backend& b, SSL_CTX* tls);

class Connector {
 public:
  struct Result {
    int fd = -1;         // connected; owned by the receiver
    SSL* ssl = nullptr;  // its TLS session, established; owned by the receiver
    std::string error;   // fd < 0: what failed
    int err = 0;         // fd < 0: the errno it amounts to (for the backend's health)
  };
  // Called once, possibly before start() returns; the connector may be destroyed inside.
  using Done = void (*)(void* owner, Result result);

  Connector(event_base* base, evdns_base* dns, const config::Config& cfg)
      : base_(base), dns_(dns), cfg_(cfg) {}
  ~Connector();
  Connector(const Connector&) = delete;
  Connector& operator=(const Connector&) = delete;

  void start(ConnectTarget target, Done done, void* owner);

 private:
  enum class Phase { kIdle, kResolving, kConnecting, kSslRequest, kTls };
  static void onResolved(void* arg, int gai_error, const evutil_addrinfo* ai);
  static void onSocket(int fd, short what, void* arg);
  static void onTimeout(int fd, short what, void* arg);
  void nextAddress(const std::string& why);
  void connected();
  void readSslAnswer();
  void driveTls();
  void arm(short what);
  void finish(Result r);
  void fail(const std::string& why, int err);
  void reset();

  event_base* base_;
  evdns_base* dns_;
  const config::Config& cfg_;
  ConnectTarget target_;
  Done done_ = nullptr;
  void* owner_ = nullptr;
  Phase phase_ = Phase::kIdle;
  Lookup* lookup_ = nullptr;
  std::unique_ptr<AddressList> addresses_;
  int fd_ = -1;
  SSL* ssl_ = nullptr;
  event* io_ = nullptr;
  event* timer_ = nullptr;
};

}  // namespace pgproxy::upstream
