#include "pgproxy/tls/contexts.h"

#include <openssl/err.h>
#include <openssl/evp.h>
#include <openssl/ssl.h>
#include <openssl/x509.h>
#include <unistd.h>

#include <cerrno>
#include <cstring>
#include <map>
#include <tuple>
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

// auth.type cert: accept whatever certificate the client sends, so that the handshake completes
// and the login refuses it with PostgreSQL's FATAL, which psql shows, instead of a TLS alert.
// OpenSSL keeps the verification's error (SSL_get_verify_result), which clientCertificate reads.
int acceptForTheLogin(int, X509_STORE_CTX*) {
  return 1;
}

base::Status requestClientCertificates(SSL_CTX* ctx, const std::string& ca) {
  if (auto st = readable("auth.client_ca", ca); !st) {
    return st;
  }
  if (SSL_CTX_load_verify_locations(ctx, ca.c_str(), nullptr) != 1) {
    return base::Error{"auth.client_ca \"" + ca + "\": " + opensslErrors()};
  }
  // The CertificateRequest names the acceptable CAs, which lets a client holding several
  // certificates pick the right one. The list is owned by ctx from here on.
  STACK_OF(X509_NAME)* names = SSL_load_client_CA_file(ca.c_str());
  if (!names) {
    return base::Error{"auth.client_ca \"" + ca + "\": no certificate in it: " + opensslErrors()};
  }
  SSL_CTX_set_client_CA_list(ctx, names);
  // Not SSL_VERIFY_FAIL_IF_NO_PEER_CERT: a client without a certificate hears the FATAL too.
  SSL_CTX_set_verify(ctx, SSL_VERIFY_PEER, acceptForTheLogin);
  return {};
}

base::Result<SSL_CTX*> serverContext(const config::Config& cfg, const std::string& cert,
                                     const std::string& key, bool client_certificates) {
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
  if (client_certificates) {
    if (auto st = requestClientCertificates(ctx, cfg.auth.client_ca); !st) {
      SSL_CTX_free(ctx);
      return st.error();
    }
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
  std::map<std::tuple<std::string, std::string, bool>, SSL_CTX*> servers;
  std::map<std::pair<std::string, int>, SSL_CTX*> backends;
  for (const auto& m : cfg.mappings) {
    SSL_CTX* server = nullptr;
    SSL_CTX* backend = nullptr;
    if (m.tls == config::TlsMode::kTerminate) {
      // Only the mappings that authenticate with cert ask for a certificate: a client of any
      // other would be asked for one that nothing reads.
      bool client_certificates = m.authenticate && cfg.auth.type == auth::ClientAuthType::kCert;
      auto files = std::make_tuple(cfg.certificateOf(m), cfg.keyOf(m), client_certificates);
      if (auto it = servers.find(files); it != servers.end()) {
        server = it->second;
      } else {
        auto ctx = serverContext(cfg, std::get<0>(files), std::get<1>(files), client_certificates);
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
  if (!cfg.admin.certificate.empty()) {
    auto ctx = serverContext(cfg, cfg.admin.certificate, cfg.admin.key, false);
    if (!ctx) {
      return base::Error{cfg.path + ": admin: " + ctx.error().message};
    }
    out->admin_ = *ctx;
    out->owned_.push_back(out->admin_);
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

auth::ClientCertificate clientCertificate(SSL* ssl) {
  auth::ClientCertificate out;
  X509* cert = ssl ? SSL_get0_peer_certificate(ssl) : nullptr;  // not a reference to free
  if (!cert) {
    return out;
  }
  out.present = true;
  long result = SSL_get_verify_result(ssl);
  out.verified = result == X509_V_OK;
  if (!out.verified) {
    out.why = X509_verify_cert_error_string(result);
  }
  // The first CN, as PostgreSQL takes it; one with an embedded NUL is no name at all (it could
  // otherwise pass for a shorter one).
  X509_NAME* subject = X509_get_subject_name(cert);
  int at = subject ? X509_NAME_get_index_by_NID(subject, NID_commonName, -1) : -1;
  if (at < 0) {
    return out;
  }
  ASN1_STRING* data = X509_NAME_ENTRY_get_data(X509_NAME_get_entry(subject, at));
  unsigned char* utf8 = nullptr;
  int len = data ? ASN1_STRING_to_UTF8(&utf8, data) : -1;
  if (len > 0) {
    std::string cn(reinterpret_cast<char*>(utf8), static_cast<std::size_t>(len));
    if (cn.find('\0') == std::string::npos) {
      out.common_name = std::move(cn);
    }
  }
  OPENSSL_free(utf8);
  return out;
}

}  // namespace pgproxy::tls
