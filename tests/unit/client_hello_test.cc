#include "pgproxy/tls/client_hello.h"

#include <gtest/gtest.h>
#include <openssl/ssl.h>

#include "tls_test_util.h"

namespace pgproxy::tls {
namespace {

using testing::makeClientHello;

ParseResult parse(const std::string& bytes, ClientHelloInfo& info) {
  return parseClientHello(bytes, info);
}

// Re-frames one ClientHello record's payload into several records split at `cuts`.
std::string splitIntoRecords(const std::string& record, std::vector<std::size_t> cuts) {
  std::string payload = record.substr(5);
  std::string out;
  std::size_t prev = 0;
  cuts.push_back(payload.size());
  for (std::size_t cut : cuts) {
    std::size_t len = cut - prev;
    out += std::string{'\x16', '\x03', '\x01', static_cast<char>(len >> 8),
                       static_cast<char>(len & 0xff)};
    out += payload.substr(prev, len);
    prev = cut;
  }
  return out;
}

TEST(ClientHello, ExtractsSniAndAlpnFromRealHello) {
  std::string hello = makeClientHello("Host1.Example.com", {"postgresql"});
  ClientHelloInfo info;
  ASSERT_EQ(parse(hello, info).status, ParseStatus::kDone);
  EXPECT_EQ(info.sni, "host1.example.com");
  EXPECT_TRUE(info.alpn_offered);
  EXPECT_TRUE(info.alpn_postgresql);
  EXPECT_EQ(info.consumed, hello.size());
}

TEST(ClientHello, NoSniNoAlpn) {
  std::string hello = makeClientHello("", {});
  ClientHelloInfo info;
  ASSERT_EQ(parse(hello, info).status, ParseStatus::kDone);
  EXPECT_EQ(info.sni, "");
  EXPECT_FALSE(info.alpn_offered);
}

TEST(ClientHello, AlpnWithoutPostgresql) {
  std::string hello = makeClientHello("a.example.com", {"h2", "http/1.1"});
  ClientHelloInfo info;
  ASSERT_EQ(parse(hello, info).status, ParseStatus::kDone);
  EXPECT_TRUE(info.alpn_offered);
  EXPECT_FALSE(info.alpn_postgresql);
}

TEST(ClientHello, Tls12Hello) {
  std::string hello = makeClientHello("old.example.com", {}, TLS1_2_VERSION);
  ClientHelloInfo info;
  ASSERT_EQ(parse(hello, info).status, ParseStatus::kDone);
  EXPECT_EQ(info.sni, "old.example.com");
}

TEST(ClientHello, EveryPrefixNeedsMore) {
  std::string hello = makeClientHello("host2.example.com", {"postgresql"});
  for (std::size_t cut = 0; cut < hello.size(); ++cut) {
    ClientHelloInfo info;
    ASSERT_EQ(parse(hello.substr(0, cut), info).status, ParseStatus::kNeedMore) << "cut " << cut;
  }
}

TEST(ClientHello, SplitAcrossRecordsAtEveryPoint) {
  std::string hello = makeClientHello("host2.example.com", {"postgresql"});
  std::size_t payload = hello.size() - 5;
  for (std::size_t cut = 1; cut < payload; ++cut) {
    std::string two = splitIntoRecords(hello, {cut});
    ClientHelloInfo info;
    ASSERT_EQ(parse(two, info).status, ParseStatus::kDone) << "cut " << cut;
    EXPECT_EQ(info.sni, "host2.example.com");
    EXPECT_EQ(info.consumed, two.size());
  }
}

TEST(ClientHello, ManyTinyRecords) {
  std::string hello = makeClientHello("tiny.example.com", {});
  std::vector<std::size_t> cuts;
  for (std::size_t i = 1; i < hello.size() - 5; ++i) {
    cuts.push_back(i);
  }
  std::string many = splitIntoRecords(hello, cuts);
  ClientHelloInfo info;
  ASSERT_EQ(parse(many, info).status, ParseStatus::kDone);
  EXPECT_EQ(info.sni, "tiny.example.com");
}

TEST(ClientHello, AgreesWithOpenSslOracle) {
  // OpenSSL's server reads the same bytes; its client-hello callback reports the server name.
  std::string hello = makeClientHello("oracle.example.com", {"postgresql"});
  SSL_CTX* ctx = SSL_CTX_new(TLS_server_method());
  std::string seen;
  SSL_CTX_set_client_hello_cb(
      ctx,
      [](SSL* s, int*, void* arg) -> int {
        const unsigned char* ext;
        size_t len;
        if (SSL_client_hello_get0_ext(s, TLSEXT_TYPE_server_name, &ext, &len) && len > 5) {
          static_cast<std::string*>(arg)->assign(reinterpret_cast<const char*>(ext + 5), len - 5);
        }
        return SSL_CLIENT_HELLO_RETRY;  // stop here: we only wanted to look
      },
      &seen);
  SSL* ssl = SSL_new(ctx);
  BIO* rbio = BIO_new(BIO_s_mem());
  BIO_write(rbio, hello.data(), static_cast<int>(hello.size()));
  SSL_set_bio(ssl, rbio, BIO_new(BIO_s_mem()));
  SSL_accept(ssl);
  SSL_free(ssl);
  SSL_CTX_free(ctx);
  ClientHelloInfo info;
  ASSERT_EQ(parse(hello, info).status, ParseStatus::kDone);
  EXPECT_EQ(seen, "oracle.example.com");
  EXPECT_EQ(info.sni, seen);
}

TEST(ClientHello, RejectsNonHandshakeRecord) {
  ClientHelloInfo info;
  EXPECT_EQ(parse(std::string("\x17\x03\x03\x00\x05hello", 10), info).status, ParseStatus::kError);
  // Plaintext after SSLRequest (the CVE-2021-23214 shape) is not a record at all.
  EXPECT_EQ(parse(std::string("\x00\x00\x00\x08\x04\xd2\x16\x2f", 8), info).status,
            ParseStatus::kError);
  EXPECT_EQ(parse(std::string("Q"), info).status, ParseStatus::kError);
}

TEST(ClientHello, RejectsOversizedRecordLengths) {
  ClientHelloInfo info;
  EXPECT_EQ(parse(std::string("\x16\x03\x03\xff\xff", 5), info).status, ParseStatus::kError);
  EXPECT_EQ(parse(std::string("\x16\x03\x03\x48\x01", 5), info).status, ParseStatus::kError);
  EXPECT_EQ(parse(std::string("\x16\x03\x03\x00\x00", 5), info).status, ParseStatus::kError);
  EXPECT_EQ(parse(std::string("\x16\x02\x00\x00\x10", 5), info).status, ParseStatus::kError);
}

TEST(ClientHello, RejectsHugeHandshakeLength) {
  std::string rec("\x16\x03\x01\x00\x04\x01\x01\x00\x00", 9);  // handshake says 64 KiB
  ClientHelloInfo info;
  EXPECT_EQ(parse(rec, info).status, ParseStatus::kError);
}

TEST(ClientHello, RejectsOtherHandshakeType) {
  std::string rec("\x16\x03\x01\x00\x04\x02\x00\x00\x00", 9);  // ServerHello
  ClientHelloInfo info;
  EXPECT_EQ(parse(rec, info).status, ParseStatus::kError);
}

TEST(ClientHello, TruncatedBodyIsAnError) {
  // A complete handshake message whose body is too short for its fixed fields.
  std::string rec("\x16\x03\x01\x00\x08\x01\x00\x00\x04\x03\x03\x00\x00", 13);
  ClientHelloInfo info;
  EXPECT_EQ(parse(rec, info).status, ParseStatus::kError);
}

TEST(ClientHello, RejectsSniWithNul) {
  std::string hello = makeClientHello("abcdefgh.example.com", {});
  std::size_t at = hello.find("abcdefgh");
  ASSERT_NE(at, std::string::npos);
  hello[at + 3] = '\0';
  ClientHelloInfo info;
  EXPECT_EQ(parse(hello, info).status, ParseStatus::kError);
  EXPECT_EQ(info.sni, "");
}

TEST(ClientHello, CorruptedLengthsNeverCrash) {
  std::string hello = makeClientHello("fuzz.example.com", {"postgresql"});
  for (std::size_t i = 5; i < hello.size(); ++i) {
    for (int delta : {1, 0x7f, 0xff}) {
      std::string bad = hello;
      bad[i] = static_cast<char>(bad[i] + delta);
      ClientHelloInfo info;
      auto r = parse(bad, info);
      if (r.status == ParseStatus::kDone) {
        EXPECT_LE(info.consumed, bad.size());
      }
    }
  }
}

}  // namespace
}  // namespace pgproxy::tls
