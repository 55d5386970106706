#pragma once

#include <openssl/bio.h>
#include <openssl/ssl.h>

#include <string>
#include <vector>

namespace pgproxy::testing {

// A real ClientHello, as OpenSSL's client writes it, with the given SNI and ALPN protocols.
inline std::string makeClientHello(const std::string& sni, const std::vector<std::string>& alpn,
                                   long max_version = TLS1_3_VERSION) {
  SSL_CTX* ctx = SSL_CTX_new(TLS_client_method());
  SSL_CTX_set_max_proto_version(ctx, max_version);
  SSL* ssl = SSL_new(ctx);
  BIO* rbio = BIO_new(BIO_s_mem());
  BIO* wbio = BIO_new(BIO_s_mem());
  SSL_set_bio(ssl, rbio, wbio);
  if (!sni.empty()) {
    SSL_set_tlsext_host_name(ssl, sni.c_str());
  }
  if (!alpn.empty()) {
    std::string wire;
    for (const auto& p : alpn) {
      wire.push_back(static_cast<char>(p.size()));
      wire += p;
    }
    SSL_set_alpn_protos(ssl, reinterpret_cast<const unsigned char*>(wire.data()),
                        static_cast<unsigned>(wire.size()));
  }
  SSL_connect(ssl);  // wants to read the ServerHello; the ClientHello is in wbio
  char* data;
  long n = BIO_get_mem_data(wbio, &data);
  std::string out(data, static_cast<std::size_t>(n));
  SSL_free(ssl);
  SSL_CTX_free(ctx);
  return out;
}

}  // namespace pgproxy::testing
