#pragma once

#include <cstddef>
#include <memory>
#include <string>
#include <vector>

#include "pgproxy/auth/client_auth.h"
#include "pgproxy/base/result.h"
#include "pgproxy/config/config.h"

typedef struct ssl_ctx_st SSL_CTX;

typedef struct ssl_st SSL;

namespace pgproxy::tls {

// The OpenSSL contexts one configuration generation needs for the sessions pgproxy terminates:
// per terminate mapping, the server context holding its certificate and the client context
// that talks TLS to its backend. The master builds them before it forks a generation, so a
// missing or broken file fails the start, `-t` and the reload (keeping the old generation),
// never a worker. Mappings naming the same files share one context. With auth.type cert, the
// server context of a mapping that authenticates also requests the client's certificate.
class Contexts {
 public:
  static base::Result<std::shared_ptr<const Contexts>> build(const config::Config& cfg);
  ~Contexts();
  Contexts(const Contexts&) = delete;
  Contexts& operator=(const Contexts&) = delete;

  // nullptr for passthrough mappings.
  SSL_CTX* server(std::size_t mapping) const { return server_[mapping]; }
  // nullptr for passthrough mappings and for backend_tls: disable.
  SSL_CTX* backend(std::size_t mapping) const { return backend_[mapping]; }
  // The admin listener's (admin.certificate); nullptr: plain HTTP.
  SSL_CTX* admin() const { return admin_; }

 private:
  Contexts() = default;
  std::vector<SSL_CTX*> server_, backend_;  // indexed by mapping; entries may repeat
  std::vector<SSL_CTX*> owned_;
  SSL_CTX* admin_ = nullptr;
};

// OpenSSL's queued errors as one line (and clears the queue).
std::string opensslErrors();
// RFC 5929 tls-server-end-point channel-binding data for the certificate this side of `ssl`
// presents: its hash with the certificate's signature digest (SHA-256 for MD5 and SHA-1), as
// PostgreSQL computes it. Empty when there is no certificate or the digest is unknown.
std::string serverEndPointHash(SSL* ssl);
// What the client's side of `ssl` (a terminated session) says about its certificate: sent,
// verified against auth.client_ca, and its Subject CN. nullptr: a plaintext client, no
// certificate.
auth::ClientCertificate clientCertificate(SSL* ssl);

}  // namespace pgproxy::tls
