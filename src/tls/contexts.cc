#include "pgproxy/tls/contexts.h"

#include <openssl/err.h>
#include <openssl/evp.h>
#include <openssl/ssl.h>
#include <unistd.h>

#include <cerrno>
#include <cstring>
#include <map>
#include <utility>

#include "pgproxy/base/text.h"

namespace pgproxy::tls {
namespace {

constexpr unsigned char kAlpnPostgresql[] = "\x0apostgresql";

// ALPN: select "postgresql" when offered (PostgreSQL 17 clients on direct TLS insist on it);
// a client that offers only other protocols gets no ALPN answer, as from PostgreSQL 15/16.
int selectAlpn(SSL*, const unsigned char** out, unsigned char* outlen, const unsigned char* in,
               unsigned int inlen, void*) {
  unsigned char* selected = nullptr;
  if (SSL_select_next_proto(&selected, outlen, kAlpnPostgresql, sizeof(kAlpnPostgresql) - 1, in,
                            inlen) == OPENSSL_NPN_NEGOTIATED) {
    *out = selected;
    return SSL_TLSEXT_ERR_OK;
  }
  return SSL_TLSEXT_ERR_NOACK;
}

base::Status readable(const std::string& what, const std::string& path) {
  if (access(path.c_str(), R_OK) != 0) {
    return base::Error{what + " \"" + path + "\": " + base::errnoText(errno)};
  }
  return {};
}

void commonOptions(SSL_CTX* ctx) {
  // Idle sessions keep no read/write buffers; partial writes let the splice apply backpressure
  // with the same retry-from-pending logic as plain sockets.
  SSL_CTX_set_mode(ctx, SSL_MODE_RELEASE_BUFFERS | SSL_MODE_ENABLE_PARTIAL_WRITE |
                            SSL_MODE_ACCEPT_MOVING_WRITE_BUFFER);
  SSL_CTX_set_options(
      ctx, SSL_OP_NO_RENEGOTIATION | SSL_OP_IGNORE_UNEXPECTED_EOF | SSL_OP_NO_COMPRESSION);
}

base::Result<SSL_CTX*> serverContext(const config::Config& cfg, const std::string& cert,
                                     const std::string& key) {
  for (auto st : {readable("certificate", cert), readable("key", key)}) {
    if (!st) {
      return st.error();
    }
  }
  SSL_CTX* ctx = SSL_CTX_new(TLS_server_method());
  if (!ctx) {
    return base::Error{"SSL_CTX_new: " + opensslErrors()};
  }
  commonOptions(ctx);
  SSL_CTX_set_min_proto_version(ctx,
                                cfg.tls.min_version == "1.3" ? TLS1_3_VERSION : TLS1_2_VERSION);
  // libpq keeps no session cache, so tickets would be work for nothing.
  SSL_CTX_set_num_tickets(ctx, 0);
  SSL_CTX_set_session_cache_mode(ctx, SSL_SESS_CACHE_OFF);
  SSL_CTX_set_alpn_select_cb(ctx, selectAlpn, nullptr);
  auto fail = [&](const std::string& what) {
    std::string err = what + ": " + opensslErrors();
    SSL_CTX_free(ctx);
    return base::Error{err};
  };
  if (!cfg.tls.ciphers.empty() && SSL_CTX_set_cipher_list(ctx, cfg.tls.ciphers.c_str()) != 1) {
    return fail("tls.ciphers \"" + cfg.tls.ciphers + "\"");
  }
  if (!cfg.tls.ciphersuites.empty() &&
      SSL_CTX_set_ciphersuites(ctx, cfg.tls.ciphersuites.c_str()) != 1) {
    return fail("tls.ciphersuites \"" + cfg.tls.ciphersuites + "\"");
  }
  if (SSL_CTX_use_certificate_chain_file(ctx, cert.c_str()) != 1) {
    return fail("certificate \"" + cert + "\"");
  }
  if (SSL_CTX_use_PrivateKey_file(ctx, key.c_str(), SSL_FILETYPE_PEM) != 1) {
    return fail("key \"" + key + "\"");
  }
  if (SSL_CTX_check_private_key(ctx) != 1) {
    return fail("key \"" + key + "\" does not match certificate \"" + cert + "\"");
  }
  return ctx;
}

base::Result<SSL_CTX*> backendContext(const config::Mapping& m) {
  SSL_CTX* ctx = SSL_CTX_new(TLS_client_method());
  if (!ctx) {
    return base::Error{"SSL_CTX_new: " + opensslErrors()};
  }
  commonOptions(ctx);
  SSL_CTX_set_min_proto_version(ctx, TLS1_2_VERSION);
  SSL_CTX_set_alpn_protos(ctx, kAlpnPostgresql, sizeof(kAlpnPostgresql) - 1);
  if (m.backend_tls == config::BackendTls::kVerifyCa ||
      m.backend_tls == config::BackendTls::kVerifyFull) {
    SSL_CTX_set_verify(ctx, SSL_VERIFY_PEER, nullptr);
    int ok = 0;
    if (m.backend_ca.empty()) {
      ok = SSL_CTX_set_default_verify_paths(ctx);
    } else if (auto st = readable("backend_ca", m.backend_ca); !st) {
      SSL_CTX_free(ctx);
      return st.error();
    } else {
      ok = SSL_CTX_load_verify_locations(ctx, m.backend_ca.c_str(), nullptr);
    }
    if (ok != 1) {
      std::string err = "backend_ca \"" + m.backend_ca + "\": " + opensslErrors();
      SSL_CTX_free(ctx);
      return base::Error{err};
    }
  } else {
    SSL_CTX_set_verify(ctx, SSL_VERIFY_NONE, nullptr);  // require: encryption, like libpq's
  }
  return ctx;
}

}  // namespace

std::string opensslErrors() {
  std::string out;
  while (unsigned long e = ERR_get_error()) {
    char buf[256];
    ERR_error_string_n(e, buf, sizeof(buf));
    const char* reason = ERR_reason_error_string(e);
    out += (out.empty() ? "" : "; ") + std::string(reason ? reason : buf);
  }
  return out.empty() ? "unknown TLS error" : out;
}

Contexts::~Contexts() {
  for (SSL_CTX* ctx : owned_) {
    SSL_CTX_free(ctx);
  }
}

base::Result<std::shared_ptr<const Contexts>> Contexts::build(const config::Config& cfg) {
  std::shared_ptr<Contexts> out(new Contexts());
  std::map<std::pair<std::string, std::string>, SSL_CTX*> servers;
  std::map<std::pair<std::string, int>, SSL_CTX*> backends;
  for (const auto& m : cfg.mappings) {
    SSL_CTX* server = nullptr;
    SSL_CTX* backend = nullptr;
    if (m.tls == config::TlsMode::kTerminate) {
      auto files = std::make_pair(cfg.certificateOf(m), cfg.keyOf(m));
      if (auto it = servers.find(files); it != servers.end()) {
        server = it->second;
      } else {
        auto ctx = serverContext(cfg, files.first, files.second);
        if (!ctx) {
          return base::Error{cfg.path + ": mapping \"" + m.external + "\": " + ctx.error().message};
        }
        server = servers[files] = *ctx;
        out->owned_.push_back(server);
      }
      if (m.backend_tls != config::BackendTls::kDisable) {
        auto key = std::make_pair(m.backend_ca, static_cast<int>(m.backend_tls));
        if (auto it = backends.find(key); it != backends.end()) {
          backend = it->second;
        } else {
          auto ctx = backendContext(m);
          if (!ctx) {
            return base::Error{cfg.path + ": mapping \"" + m.external +
                               "\": " + ctx.error().message};
          }
          backend = backends[key] = *ctx;
          out->owned_.push_back(backend);
        }
      }
    }
    out->server_.push_back(server);
    out->backend_.push_back(backend);
  }
  return std::shared_ptr<const Contexts>(std::move(out));
}

std::string serverEndPointHash(SSL* ssl) {
  X509* cert = SSL_get_certificate(ssl);  // ours, not a reference to free
  if (!cert) {
    return "";
  }
  int mdnid = NID_undef;
  if (!X509_get_signature_info(cert, &mdnid, nullptr, nullptr, nullptr)) {
    return "";
  }
  const EVP_MD* md =
      mdnid == NID_md5 || mdnid == NID_sha1 ? EVP_sha256() : EVP_get_digestbynid(mdnid);
  unsigned char out[EVP_MAX_MD_SIZE];
  unsigned int len = 0;
  if (!md || X509_digest(cert, md, out, &len) != 1) {
    return "";
  }
  return std::string(reinterpret_cast<char*>(out), len);
}

}  // namespace pgproxy::tls
