// Hostile input (issue 9): whatever arrives, pgproxy keeps serving, answers like PostgreSQL where
// the protocol allows, and gives back every byte of memory and every descriptor.
#include <arpa/inet.h>
#include <gtest/gtest.h>
#include <libpq-fe.h>
#include <netinet/in.h>
#include <openssl/ssl.h>
#include <openssl/x509.h>
#include <poll.h>
#include <sys/resource.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <unistd.h>

#include <atomic>
#include <random>
#include <string>
#include <thread>
#include <vector>

#include "../unit/tls_test_util.h"
#include "harness.h"

namespace pgproxy::it {
namespace {

using std::chrono::milliseconds;
using std::chrono::seconds;

const char* kMappings = R"(mappings:
  - {external: host1.example.com, internal: 127.0.0.1, port: {P1}}
  - {external: host2.example.com, internal: 127.0.0.1, port: {P2}}
default: host1.example.com
)";

const std::string kSslRequest("\x00\x00\x00\x08\x04\xd2\x16\x2f", 8);

void raiseFdLimit() {
  rlimit rl{};
  getrlimit(RLIMIT_NOFILE, &rl);
  rl.rlim_cur = rl.rlim_max;
  setrlimit(RLIMIT_NOFILE, &rl);
}

bool readByte(int fd, char* c) {
  pollfd p{fd, POLLIN, 0};
  return poll(&p, 1, 10'000) == 1 && read(fd, c, 1) == 1;
}

// A TLS client driven by hand through memory BIOs, so a test can reshape its first flight
// (split it across records, trickle it) and then finish the handshake over a socket.
class HandDrivenTls {
 public:
  explicit HandDrivenTls(const std::string& sni) {
    ctx_ = SSL_CTX_new(TLS_client_method());
    ssl_ = SSL_new(ctx_);
    rbio_ = BIO_new(BIO_s_mem());
    wbio_ = BIO_new(BIO_s_mem());
    SSL_set_bio(ssl_, rbio_, wbio_);
    SSL_set_tlsext_host_name(ssl_, sni.c_str());
    SSL_connect(ssl_);  // writes the ClientHello into wbio
  }
  ~HandDrivenTls() {
    SSL_free(ssl_);
    SSL_CTX_free(ctx_);
  }
  std::string output() {
    std::string out;
    char buf[16384];
    int n;
    while ((n = BIO_read(wbio_, buf, sizeof(buf))) > 0) {
      out.append(buf, static_cast<std::size_t>(n));
    }
    return out;
  }
  // Completes the handshake over `fd`; returns the server certificate's subject, "" on failure.
  std::string finish(int fd) {
    char buf[16384];
    auto deadline = std::chrono::steady_clock::now() + seconds(15);
    while (std::chrono::steady_clock::now() < deadline) {
      int r = SSL_do_handshake(ssl_);
      std::string out = output();
      if (!out.empty() && write(fd, out.data(), out.size()) != static_cast<ssize_t>(out.size())) {
        return "";
      }
      if (r == 1) {
        X509* cert = SSL_get1_peer_certificate(ssl_);
        if (!cert) {
          return "";
        }
        char name[256];
        X509_NAME_oneline(X509_get_subject_name(cert), name, sizeof(name));
        X509_free(cert);
        return name;
      }
      if (SSL_get_error(ssl_, r) != SSL_ERROR_WANT_READ) {
        return "";
      }
      pollfd p{fd, POLLIN, 0};
      if (poll(&p, 1, 100) <= 0) {
        continue;
      }
      ssize_t n = read(fd, buf, sizeof(buf));
      if (n <= 0) {
        return "";
      }
      BIO_write(rbio_, buf, static_cast<int>(n));
    }
    return "";
  }

 private:
  SSL_CTX* ctx_;
  SSL* ssl_;
  BIO* rbio_;
  BIO* wbio_;
};

// One TLS handshake record split into two records at `at` bytes of its body.
std::string splitRecord(const std::string& record, std::size_t at) {
  std::string body = record.substr(5);
  auto header = [&](std::size_t len) {
    std::string h = record.substr(0, 3);
    h.push_back(static_cast<char>(len >> 8));
    h.push_back(static_cast<char>(len & 0xff));
    return h;
  };
  return header(at) + body.substr(0, at) + header(body.size() - at) + body.substr(at);
}

TEST(Hostile, OneByteAtATimeStillLogsIn) {
  Proxy proxy(kMappings);
  // Plaintext: the StartupMessage a byte every 80 ms (about 3 s in all).
  int fd = connectTcp(proxy.port());
  std::string startup = startupPacket({{"user", "postgres"}, {"database", "postgres"}});
  for (char c : startup) {
    ASSERT_EQ(write(fd, &c, 1), 1);
    std::this_thread::sleep_for(milliseconds(80));
  }
  std::string got;
  EXPECT_TRUE(readUntilReady(fd, &got)) << got;
  close(fd);
  // TLS passthrough: the SSLRequest and the whole ClientHello a byte at a time; the SNI is still
  // found and the session reaches host2's server (its certificate proves it).
  fd = connectTcp(proxy.port());
  for (char c : kSslRequest) {
    ASSERT_EQ(write(fd, &c, 1), 1);
    std::this_thread::sleep_for(milliseconds(20));
  }
  char s = 0;
  ASSERT_TRUE(readByte(fd, &s));
  EXPECT_EQ(s, 'S');
  HandDrivenTls tls("host2.example.com");
  std::string hello = tls.output();
  for (char c : hello) {
    ASSERT_EQ(write(fd, &c, 1), 1);
    std::this_thread::sleep_for(milliseconds(5));
  }
  EXPECT_NE(tls.finish(fd).find("CN=host2.example.com"), std::string::npos);
  close(fd);
}

TEST(Hostile, ClientHelloSplitAcrossRecordsIsStillRouted) {
  Proxy proxy(kMappings);
  // Split inside the SNI extension and elsewhere: routing must follow the name, never fall back
  // to the default mapping (host1).
  for (std::size_t at : {std::size_t{1}, std::size_t{40}, std::size_t{90}, std::size_t{120}}) {
    int fd = connectTcp(proxy.port());
    ASSERT_EQ(write(fd, kSslRequest.data(), 8), 8);
    char s = 0;
    ASSERT_TRUE(readByte(fd, &s));
    HandDrivenTls tls("host2.example.com");
    std::string hello = tls.output();
    ASSERT_GT(hello.size(), at + 5);
    std::string split = splitRecord(hello, at);
    ASSERT_EQ(write(fd, split.data(), split.size()), static_cast<ssize_t>(split.size()));
    EXPECT_NE(tls.finish(fd).find("CN=host2.example.com"), std::string::npos) << at;
    close(fd);
  }
}

// A hand-built ClientHello whose server_name is exactly `sni` (any bytes, any length).
std::string helloWithSni(const std::string& sni) {
  auto u16 = [](std::string& s, std::size_t v) {
    s.push_back(static_cast<char>(v >> 8));
    s.push_back(static_cast<char>(v & 0xff));
  };
  std::string list(1, '\0');  // host_name
  u16(list, sni.size());
  list += sni;
  std::string ext;
  u16(ext, 0);  // server_name
  u16(ext, list.size() + 2);
  u16(ext, list.size());
  ext += list;
  std::string body("\x03\x03", 2);
  body += std::string(32, 'r');
  body.push_back('\0');                        // session id
  body += std::string("\x00\x02\xc0\x2f", 4);  // one cipher suite
  body += std::string("\x01\x00", 2);          // null compression
  u16(body, ext.size());
  body += ext;
  std::string hs(1, '\x01');
  hs.push_back(static_cast<char>(body.size() >> 16));
  u16(hs, body.size() & 0xffff);
  hs += body;
  std::string rec("\x16\x03\x01", 3);
  u16(rec, hs.size());
  return rec + hs;
}

// Sends an SSLRequest and then `bytes`; returns what came back until the close.
std::string afterS(int port, const std::string& bytes, bool* closed) {
  int fd = connectTcp(port);
  EXPECT_EQ(write(fd, kSslRequest.data(), 8), 8);
  char s = 0;
  EXPECT_TRUE(readByte(fd, &s));
  EXPECT_EQ(s, 'S');
  EXPECT_EQ(write(fd, bytes.data(), bytes.size()), static_cast<ssize_t>(bytes.size()));
  std::string got = readUntilClose(fd, seconds(10), closed);
  close(fd);
  return got;
}

TEST(Hostile, HostileServerNamesAndNonTlsBytesGetAlerts) {
  Proxy proxy(kMappings);
  struct Case {
    std::string bytes;
    int alert;  // expected alert description
  };
  const Case cases[] = {
      {helloWithSni(std::string(300, 'a')), 50},                    // longer than a name can be
      {helloWithSni(std::string("host1.example.com\0x", 19)), 50},  // a NUL inside
      {helloWithSni("127.0.0.1"), 112},  // an IP literal is no mapping's name: unrecognized_name
      {helloWithSni("host1.example.com.evil"), 112},
      {"GET / HTTP/1.1\r\n\r\n", 50},                // not TLS after S
      {std::string("\x16\x03\x01\xff\xff", 5), 50},  // a record longer than TLS allows
  };
  for (const auto& c : cases) {
    bool closed = false;
    std::string got = afterS(proxy.port(), c.bytes, &closed);
    EXPECT_TRUE(closed);
    ASSERT_EQ(got.size(), 7u) << c.bytes;
    EXPECT_EQ(got[0], '\x15');  // an alert record, never an ErrorResponse inside the TLS channel
    EXPECT_EQ(static_cast<unsigned char>(got[6]), c.alert) << c.bytes;
  }
  // A well-formed hand-built hello for a real name is routed (host2's server answers it).
  bool closed = false;
  std::string got = afterS(proxy.port(), helloWithSni("host2.example.com"), &closed);
  EXPECT_FALSE(got.empty());
  EXPECT_EQ(psql(proxy.tls("host1"), "show cluster_name").output, "host1\n");
}

TEST(Hostile, TwoThousandStalledClientsDoNotStopOthers) {
  raiseFdLimit();
  Proxy proxy(std::string("handshake_timeout: 5s\n") + kMappings);
  std::vector<int> stalled;
  for (int i = 0; i < 2000; ++i) {
    int fd = connectTcp(proxy.port());
    ASSERT_GE(fd, 0) << i;
    ASSERT_EQ(write(fd, "\x00\x00", 2), 2);
    stalled.push_back(fd);
  }
  // While they stall, real clients keep connecting and querying.
  for (int i = 0; i < 5; ++i) {
    auto r = psql(proxy.tls(i % 2 ? "host1" : "host2"), "select " + std::to_string(i));
    EXPECT_EQ(r.output, std::to_string(i) + "\n") << r.output;
  }
  // handshake_timeout closes every stalled one, with nothing sent.
  for (int fd : stalled) {
    bool closed = false;
    std::string got = readUntilClose(fd, seconds(30), &closed);
    EXPECT_TRUE(closed);
    EXPECT_EQ(got, "");
    close(fd);
  }
}

// `count` connections of random bytes (pure noise, noise after an SSLRequest, noise after a
// plausible startup length), `batch` at a time; each client sends and half-closes. Returns how
// many pgproxy closed.
int randomFlood(int port, int count, std::mt19937& rng) {
  int closedByProxy = 0;
  const int batch = 100;
  for (int done = 0; done < count; done += batch) {
    std::vector<int> fds;
    for (int i = 0; i < batch; ++i) {
      int fd = connectTcp(port);
      if (fd < 0) {
        continue;
      }
      std::string bytes;
      switch (rng() % 3) {
        case 1:
          bytes = kSslRequest;
          break;
        case 2: {
          std::uint32_t len = htonl(8 + rng() % 200);
          bytes.assign(reinterpret_cast<char*>(&len), 4);
          break;
        }
        default:
          break;
      }
      std::size_t n = 1 + rng() % 300;
      for (std::size_t k = 0; k < n; ++k) {
        bytes.push_back(static_cast<char>(rng()));
      }
      ssize_t ignored = write(fd, bytes.data(), bytes.size());
      (void)ignored;
      shutdown(fd, SHUT_WR);
      fds.push_back(fd);
    }
    for (int fd : fds) {
      bool closed = false;
      readUntilClose(fd, seconds(10), &closed);
      closedByProxy += closed ? 1 : 0;
      close(fd);
    }
  }
  return closedByProxy;
}

TEST(Hostile, TenThousandRandomConnectionsLeaveNothingBehind) {
  ScopedAsanOption noQuarantine("quarantine_size_mb=0");
  Proxy proxy(kMappings);
  std::mt19937 rng(20261127);
  // Warm up (allocator arenas, libevent's tables), then take the baseline.
  randomFlood(proxy.port(), 1000, rng);
  ASSERT_TRUE(eventually([&] { return psql(proxy.plain(), "select 1").output == "1\n"; }));
  long rssBefore = proxyRss(proxy);
  int fdsBefore = proxyFds(proxy);
  auto workers = childrenOf(proxy.pid());
  EXPECT_EQ(randomFlood(proxy.port(), 10'000, rng), 10'000);
  EXPECT_EQ(childrenOf(proxy.pid()), workers);  // no worker died
  EXPECT_TRUE(eventually([&] { return proxyFds(proxy) == fdsBefore; }))
      << proxyFds(proxy) << " descriptors, was " << fdsBefore;
  long rssAfter = proxyRss(proxy);
  EXPECT_LE(rssAfter, rssBefore + rssBefore / 10) << rssBefore << " KiB before";
  EXPECT_EQ(psql(proxy.tls("host2"), "show cluster_name").output, "host2\n");
}

TEST(Hostile, OutOfDescriptorsPausesAcceptingAndRecovers) {
  // pgproxy raises its soft limit to the hard one, so lower the hard one: prlimit execs pgproxy
  // in place (same pid) with at most 40 descriptors.
  std::string dir = tempDir("pgproxy-emfile");
  std::string wrapper = dir + "/pgproxy";
  writeFile(wrapper, "#!/bin/sh\nexec prlimit --nofile=40:40 " + proxyBinary() + " \"$@\"\n");
  ASSERT_EQ(chmod(wrapper.c_str(), 0755), 0);
  Proxy proxy(std::string("handshake_timeout: 3s\n") + kMappings, 1, wrapper);
  auto workers = childrenOf(proxy.pid());
  std::vector<int> stalled;
  for (int i = 0; i < 60; ++i) {
    int fd = connectTcp(proxy.port());  // the kernel completes the connection; accept may not
    ASSERT_GE(fd, 0);
    ASSERT_EQ(write(fd, "\x00\x00", 2), 2);
    stalled.push_back(fd);
  }
  EXPECT_TRUE(eventually([&] {
    return proxy.log().find("accept() failed: Too many open files") != std::string::npos;
  })) << proxy.log();
  // Once handshake_timeout has closed the stalled ones, the backlog drains and clients are
  // served again by the same worker.
  for (int fd : stalled) {
    bool closed = false;
    readUntilClose(fd, seconds(60), &closed);
    EXPECT_TRUE(closed);
    close(fd);
  }
  EXPECT_TRUE(eventually([&] { return psql(proxy.plain(), "select 9").output == "9\n"; }));
  EXPECT_EQ(childrenOf(proxy.pid()), workers);
  // Logged once per interval, not once per failed accept.
  std::string log = proxy.log();
  std::size_t lines = 0;
  for (std::size_t at = log.find("pausing accepts"); at != std::string::npos;
       at = log.find("pausing accepts", at + 1)) {
    ++lines;
  }
  EXPECT_LE(lines, 3u) << log;
}

// A server that is not PostgreSQL, or a broken one: after the startup packet it answers with
// `reply` and then waits for the client to go.
class MisbehavingBackend {
 public:
  explicit MisbehavingBackend(std::string reply) : reply_(std::move(reply)) {
    fd_ = listenLoopback(&port_);
    thread_ = std::thread([this] {
      while (!stop_) {
        pollfd p{fd_, POLLIN, 0};
        if (poll(&p, 1, 100) <= 0) {
          continue;
        }
        int c = accept(fd_, nullptr, nullptr);
        char buf[1024];
        if (c >= 0 && read(c, buf, sizeof(buf)) > 0) {
          ssize_t ignored = write(c, reply_.data(), reply_.size());
          (void)ignored;
          bool closed = false;
          readUntilClose(c, seconds(5), &closed);
        }
        if (c >= 0) {
          close(c);
        }
      }
    });
  }
  ~MisbehavingBackend() {
    stop_ = true;
    thread_.join();
    close(fd_);
  }
  int port() const { return port_; }

 private:
  std::string reply_;
  int fd_ = -1, port_ = 0;
  std::atomic<bool> stop_{false};
  std::thread thread_;
};

TEST(Hostile, MisbehavingBackendEndsOnlyItsSession) {
  struct Case {
    std::string reply;
    std::string sqlstate;  // what the client reads: pgproxy's 08P01, or the backend's own bytes
  };
  const Case cases[] = {
      {"HTTP/1.1 400 Bad Request\r\n\r\n", "08P01"},                   // not PostgreSQL at all
      {std::string("R\x7f\xff\xff\xf0\x00\x00\x00\x00", 9), "08P01"},  // a 2 GB message
      {std::string("K\x00\x00\x00\x06xx", 7), "08P01"},  // BackendKeyData of the wrong size
      {std::string("E\x00\x00\x00\x05\x00", 6), ""},     // an ErrorResponse without a code
  };
  for (const auto& c : cases) {
    MisbehavingBackend evil(c.reply);
    // pgproxy terminates TLS for host1 and talks plaintext to the misbehaving backend, so both a
    // plaintext client and a TLS one read what pgproxy makes of it.
    const std::string sb = sandbox().dir + "/";
    Proxy proxy(
        "log_protocol: true\nmappings:\n"
        "  - {external: host1.example.com, internal: 127.0.0.1, port: " +
        std::to_string(evil.port()) + ", tls: terminate, certificate: " + sb +
        "proxy-host1.crt, key: " + sb +
        "proxy-host1.key, backend_tls: disable}\n"
        "  - {external: host2.example.com, internal: 127.0.0.1, port: {P2}}\n"
        "default: host1.example.com\n");
    auto workers = childrenOf(proxy.pid());
    int fd = connectTcp(proxy.port());
    std::string startup = startupPacket({{"user", "postgres"}});
    ASSERT_EQ(write(fd, startup.data(), startup.size()), static_cast<ssize_t>(startup.size()));
    bool closed = false;
    std::string got = readUntilClose(fd, seconds(10), &closed);
    close(fd);
    if (c.sqlstate.empty()) {
      EXPECT_EQ(got, c.reply);  // valid framing: relayed as it came
    } else {
      EXPECT_TRUE(closed);
      EXPECT_EQ(sqlstateOf(got), c.sqlstate) << got;
      EXPECT_NE(got.find("is not the PostgreSQL protocol"), std::string::npos) << got;
      EXPECT_TRUE(eventually(
          [&] { return proxy.log().find("outcome=protocol_error") != std::string::npos; }));
    }
    auto viaTls =
        psql("host=host1.example.com hostaddr=127.0.0.1 port=" + std::to_string(proxy.port()) +
                 " sslmode=verify-full sslrootcert=" + sb +
                 "proxy-ca.crt user=postgres connect_timeout=10",
             "select 1");
    EXPECT_NE(viaTls.exit_code, 0);
    if (!c.sqlstate.empty()) {
      EXPECT_NE(viaTls.output.find("is not the PostgreSQL protocol"), std::string::npos)
          << viaTls.output;
    }
    EXPECT_EQ(childrenOf(proxy.pid()), workers);
    EXPECT_EQ(psql(proxy.tls("host2"), "show cluster_name").output, "host2\n");
  }
}

}  // namespace
}  // namespace pgproxy::it
