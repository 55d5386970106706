// Every refusal is clear to the client and leaves the proxy serving.
#include <arpa/inet.h>
#include <gtest/gtest.h>
#include <netinet/in.h>
#include <sys/socket.h>
#include <unistd.h>

#include <atomic>
#include <thread>

#include "harness.h"

namespace pgproxy::it {
namespace {

const char* kTwoMappings = R"(handshake_timeout: 1s
mappings:
  - {external: host1.example.com, internal: 127.0.0.1, port: {P1}}
  - {external: host2.example.com, internal: 127.0.0.1, port: {P2}}
  - {external: down.example.com, internal: 127.0.0.1, port: {DEAD}}
)";

std::string sendAndRead(int port, const std::string& bytes, bool* closed,
                        std::chrono::milliseconds wait = std::chrono::seconds(10)) {
  int fd = connectTcp(port);
  EXPECT_GE(fd, 0);
  EXPECT_EQ(write(fd, bytes.data(), bytes.size()), static_cast<ssize_t>(bytes.size()));
  std::string got = readUntilClose(fd, wait, closed);
  close(fd);
  return got;
}

TEST(Refusal, PlaintextWithoutDefaultGets08004) {
  Proxy proxy(kTwoMappings);
  bool closed = false;
  std::string got = sendAndRead(proxy.port(), startupPacket({{"user", "postgres"}}), &closed);
  EXPECT_TRUE(closed);
  EXPECT_EQ(sqlstateOf(got), "08004");
  auto r = psql(proxy.plain(), "select 1");
  EXPECT_NE(r.exit_code, 0);
  EXPECT_NE(r.output.find("not using TLS"), std::string::npos) << r.output;
  EXPECT_NE(r.output.find("sslmode=require"), std::string::npos) << r.output;
}

TEST(Refusal, BackendDownPlaintextGets08006NamingMapping) {
  Proxy proxy(std::string("default: down.example.com\n") + kTwoMappings);
  bool closed = false;
  std::string got = sendAndRead(proxy.port(), startupPacket({{"user", "postgres"}}), &closed);
  EXPECT_TRUE(closed);
  EXPECT_EQ(sqlstateOf(got), "08006");
  EXPECT_NE(got.find("could not connect to backend for \"down.example.com\""), std::string::npos)
      << got;
  // The other mappings keep serving.
  EXPECT_EQ(psql(proxy.tls("host1"), "show cluster_name").output, "host1\n");
}

TEST(Refusal, BackendDownTlsGetsAlert) {
  Proxy proxy(kTwoMappings);
  auto r = psql(proxy.tls("down", "require"), "select 1");
  EXPECT_NE(r.exit_code, 0);
  EXPECT_NE(r.output.find("internal error"), std::string::npos) << r.output;
  EXPECT_EQ(psql(proxy.tls("host2"), "show cluster_name").output, "host2\n");
}

TEST(Refusal, UnencryptedDataAfterSslRequestIsClosed) {
  // CVE-2021-23214: a StartupMessage pipelined behind the SSLRequest must not be answered 'S'.
  Proxy proxy(std::string("default: host1.example.com\n") + kTwoMappings);
  std::string ssl("\x00\x00\x00\x08\x04\xd2\x16\x2f", 8);
  bool closed = false;
  std::string got = sendAndRead(proxy.port(), ssl + startupPacket({{"user", "postgres"}}), &closed);
  EXPECT_TRUE(closed);
  EXPECT_EQ(got, "");
  EXPECT_NE(proxy.log().find("unencrypted data after SSL request"), std::string::npos);
}

TEST(Refusal, BadStartupLengthsClosedWithNothingSent) {
  Proxy proxy(kTwoMappings);
  // As PostgreSQL: 10001 is a length it accepts, so that one waits for the rest until
  // handshake_timeout (1 s here); the others are closed at once.
  for (std::uint32_t len : {0u, 4u, 7u, 10001u, 10005u, 0x7fffffffu}) {
    std::uint32_t be = htonl(len);
    std::string pkt(reinterpret_cast<char*>(&be), 4);
    pkt += std::string("\x00\x03\x00\x00", 4);
    bool closed = false;
    std::string got = sendAndRead(proxy.port(), pkt, &closed);
    EXPECT_TRUE(closed) << len;
    EXPECT_EQ(got, "") << len;
  }
}

TEST(Refusal, MalformedStartupGetsPostgresErrors) {
  Proxy proxy(std::string("default: host1.example.com\n") + kTwoMappings);
  bool closed = false;
  // Protocol 4.0, as PostgreSQL answers it.
  std::string got =
      sendAndRead(proxy.port(), startupPacket({{"user", "postgres"}}, 4u << 16), &closed);
  EXPECT_EQ(sqlstateOf(got), "0A000");
  EXPECT_NE(got.find("unsupported frontend protocol 4.0"), std::string::npos);
  // No terminator.
  std::string noTerm = startupPacket({{"user", "postgres"}});
  noTerm.pop_back();
  noTerm[3] = static_cast<char>(noTerm[3] - 1);
  got = sendAndRead(proxy.port(), noTerm, &closed);
  EXPECT_EQ(sqlstateOf(got), "08P01");
  // No user.
  got = sendAndRead(proxy.port(), startupPacket({{"database", "x"}}), &closed);
  EXPECT_EQ(sqlstateOf(got), "28000");
}

TEST(Refusal, GarbageClientHelloGetsAlertAndClose) {
  Proxy proxy(kTwoMappings);
  std::string ssl("\x00\x00\x00\x08\x04\xd2\x16\x2f", 8);
  int fd = connectTcp(proxy.port());
  ASSERT_EQ(write(fd, ssl.data(), 8), 8);
  char s = 0;
  ASSERT_EQ(read(fd, &s, 1), 1);
  EXPECT_EQ(s, 'S');
  std::string huge("\x16\x03\x03\xff\xff", 5);  // record longer than TLS allows
  ASSERT_EQ(write(fd, huge.data(), huge.size()), 5);
  bool closed = false;
  std::string got = readUntilClose(fd, std::chrono::seconds(10), &closed);
  EXPECT_TRUE(closed);
  ASSERT_GE(got.size(), 7u);
  EXPECT_EQ(got[0], '\x15');  // a TLS alert record, never an ErrorResponse
  close(fd);
}

TEST(Refusal, HandshakeTimeoutClosesStalledClients) {
  Proxy proxy(kTwoMappings);  // handshake_timeout: 1s
  std::vector<int> fds;
  for (int i = 0; i < 20; ++i) {
    int fd = connectTcp(proxy.port());
    ASSERT_EQ(write(fd, "\x00\x00", 2), 2);
    fds.push_back(fd);
  }
  // Stalled clients do not stop others from being served meanwhile.
  EXPECT_EQ(psql(proxy.tls("host1"), "show cluster_name").output, "host1\n");
  for (int fd : fds) {
    bool closed = false;
    std::string got = readUntilClose(fd, std::chrono::seconds(20), &closed);
    EXPECT_TRUE(closed);
    EXPECT_EQ(got, "");
    close(fd);
  }
  EXPECT_NE(proxy.log().find("handshake timeout"), std::string::npos);
}

// A hostile backend (not a PostgreSQL stand-in: it only answers the SSLRequest wrongly).
class EvilBackend {
 public:
  explicit EvilBackend(std::string answer) : answer_(std::move(answer)) {
    fd_ = listenLoopback(&port_);
    thread_ = std::thread([this] {
      while (true) {
        int c = accept(fd_, nullptr, nullptr);
        if (c < 0 || stop_) {
          if (c >= 0) {
            close(c);
          }
          return;
        }
        char req[8];
        if (read(c, req, 8) == 8) {
          // Counted before the answer goes out: once pgproxy has it, the test may look.
          ++served_;
          ssize_t ignored = write(c, answer_.data(), answer_.size());
          (void)ignored;
        }
        bool closed = false;
        readUntilClose(c, std::chrono::seconds(5), &closed);
        close(c);
      }
    });
  }
  ~EvilBackend() {
    stop_ = true;
    int c = connectTcp(port_);
    if (c >= 0) {
      close(c);
    }
    thread_.join();
    close(fd_);
  }
  int port() const { return port_; }
  int served() const { return served_; }

 private:
  std::string answer_;
  int fd_ = -1;
  int port_ = 0;
  std::atomic<bool> stop_{false};
  std::atomic<int> served_{0};
  std::thread thread_;
};

TEST(Refusal, BackendAnsweringNIsNotDowngraded) {
  EvilBackend evil("N");
  Proxy proxy("mappings:\n  - {external: host1.example.com, internal: 127.0.0.1, port: " +
              std::to_string(evil.port()) + "}\n");
  auto r = psql(proxy.tls("host1", "require"), "select 1");
  EXPECT_NE(r.exit_code, 0);
  EXPECT_NE(r.output.find("internal error"), std::string::npos) << r.output;
  EXPECT_EQ(evil.served(), 1);
  EXPECT_NE(proxy.log().find("does not accept TLS"), std::string::npos);
}

TEST(Refusal, BackendSendingDataAfterSIsRefused) {
  // CVE-2021-23222: bytes after 'S' could be a man in the middle's injection.
  EvilBackend evil(std::string("SE\x00\x00\x00\x05X", 7));
  Proxy proxy("mappings:\n  - {external: host1.example.com, internal: 127.0.0.1, port: " +
              std::to_string(evil.port()) + "}\n");
  auto r = psql(proxy.tls("host1", "require"), "select 1");
  EXPECT_NE(r.exit_code, 0);
  EXPECT_NE(proxy.log().find("unencrypted data after its SSL response"), std::string::npos);
}

}  // namespace
}  // namespace pgproxy::it
