// PostgreSQL 18 clients (issue 14, item 11): protocol 3.2 carries cancel keys of 4 to 256 bytes in
// BackendKeyData and CancelRequest. PostgreSQL 18 is not packaged for the test machine, so a
// scripted backend plays one (it sends a 32-byte key, as PostgreSQL 18 does); the real PostgreSQL
// 15 clusters show that a 3.2 client is still served at 3.0 by an older server.
#include <arpa/inet.h>
#include <gtest/gtest.h>
#include <libpq-fe.h>
#include <openssl/err.h>
#include <openssl/ssl.h>
#include <poll.h>
#include <sys/socket.h>
#include <unistd.h>

#include <atomic>
#include <cstdint>
#include <cstring>
#include <mutex>
#include <string>
#include <thread>
#include <vector>

#include "harness.h"

namespace pgproxy::it {
namespace {

using std::chrono::seconds;

constexpr std::uint32_t kProtocol32 = (3u << 16) | 2;
constexpr std::uint32_t kCancelCode = 80877102;
constexpr std::uint32_t kSslCode = 80877103;

void putU32(std::string& out, std::uint32_t v) {
  std::uint32_t n = htonl(v);
  out.append(reinterpret_cast<const char*>(&n), 4);
}

std::uint32_t getU32(const std::string& s, std::size_t at) {
  std::uint32_t n;
  std::memcpy(&n, s.data() + at, 4);
  return ntohl(n);
}

std::string message(char type, const std::string& body) {
  std::string out(1, type);
  putU32(out, static_cast<std::uint32_t>(body.size() + 4));
  return out + body;
}

// What a client sends to cancel: length, code, pid, the key exactly as BackendKeyData gave it.
std::string cancelRequest(std::uint32_t pid, const std::string& key) {
  std::string out;
  putU32(out, static_cast<std::uint32_t>(12 + key.size()));
  putU32(out, kCancelCode);
  putU32(out, pid);
  return out + key;
}

// The (pid, key) of the first BackendKeyData in a backend's login answer; key empty if none.
std::pair<std::uint32_t, std::string> backendKeyData(const std::string& stream) {
  std::size_t at = 0;
  while (at + 5 <= stream.size()) {
    std::uint32_t len = getU32(stream, at + 1);
    if (len < 4 || at + 1 + len > stream.size()) {
      break;
    }
    if (stream[at] == 'K' && len >= 8) {
      return {getU32(stream, at + 5), stream.substr(at + 9, len - 8)};
    }
    at += 1 + len;
  }
  return {0, ""};
}

// Plays PostgreSQL 18: a StartupMessage at 3.2 gets AuthenticationOk, ParameterStatus, a
// BackendKeyData with a 32-byte key and ReadyForQuery (at 3.0, a 4-byte key, as PostgreSQL 18
// does). A CancelRequest is recorded byte for byte and its connection closed.
class Pg18Backend {
 public:
  static constexpr std::uint32_t kPid = 424242;

  Pg18Backend() {
    for (int i = 0; i < 32; ++i) {
      key_.push_back(static_cast<char>(0xe0 + i));
    }
    key_[3] = '\0';  // a NUL inside the key must survive too
    listen_ = listenLoopback(&port_);
    thread_ = std::thread([this] { serve(); });
  }
  ~Pg18Backend() {
    stop_ = true;
    thread_.join();
    close(listen_);
  }
  int port() const { return port_; }
  const std::string& key() const { return key_; }
  std::vector<std::string> cancels() const {
    std::lock_guard<std::mutex> lock(mu_);
    return cancels_;
  }
  std::vector<std::uint32_t> versions() const {
    std::lock_guard<std::mutex> lock(mu_);
    return versions_;
  }

 private:
  struct Conn {
    int fd;
    std::string in;
    bool logged_in = false;
  };

  void serve() {
    std::vector<Conn> conns;
    while (!stop_) {
      std::vector<pollfd> polls{{listen_, POLLIN, 0}};
      for (const auto& c : conns) {
        polls.push_back({c.fd, POLLIN, 0});
      }
      if (poll(polls.data(), polls.size(), 100) <= 0) {
        continue;
      }
      if (polls[0].revents & POLLIN) {
        int fd = accept(listen_, nullptr, nullptr);
        if (fd >= 0) {
          conns.push_back({fd, "", false});
        }
      }
      for (std::size_t i = 1; i < polls.size(); ++i) {
        if (!(polls[i].revents & (POLLIN | POLLHUP | POLLERR))) {
          continue;
        }
        Conn& c = conns[i - 1];
        char buf[4096];
        ssize_t n = read(c.fd, buf, sizeof(buf));
        if (n <= 0 || !handle(c, std::string_view(buf, static_cast<std::size_t>(n)))) {
          close(c.fd);
          c.fd = -1;
        }
      }
      std::erase_if(conns, [](const Conn& c) { return c.fd < 0; });
    }
    for (const auto& c : conns) {
      close(c.fd);
    }
  }

  // False: close the connection.
  bool handle(Conn& c, std::string_view bytes) {
    c.in.append(bytes);
    if (c.logged_in) {
      return c.in.find('X') == std::string::npos;  // Terminate; anything else is ignored
    }
    while (c.in.size() >= 8 && c.in.size() >= getU32(c.in, 0)) {
      std::uint32_t len = getU32(c.in, 0);
      std::uint32_t code = getU32(c.in, 4);
      std::string packet = c.in.substr(0, len);
      c.in.erase(0, len);
      if (code == kSslCode) {
        if (write(c.fd, "N", 1) != 1) {
          return false;
        }
        continue;
      }
      std::lock_guard<std::mutex> lock(mu_);
      if (code == kCancelCode) {
        cancels_.push_back(packet);
        return false;  // like PostgreSQL: act on it, answer nothing, close
      }
      versions_.push_back(code);
      std::string body;
      putU32(body, kPid);
      body += code >= kProtocol32 ? key_ : key_.substr(0, 4);
      std::string reply = message('R', std::string(4, '\0')) +
                          message('S', std::string("server_version\0"
                                                   "18.1\0",
                                                   20)) +
                          message('K', body) + message('Z', "I");
      c.logged_in = true;
      return write(c.fd, reply.data(), reply.size()) == static_cast<ssize_t>(reply.size());
    }
    return true;
  }

  std::string key_;
  int listen_ = -1, port_ = 0;
  std::atomic<bool> stop_{false};
  std::thread thread_;
  mutable std::mutex mu_;
  std::vector<std::string> cancels_;
  std::vector<std::uint32_t> versions_;
};

// A client's TLS session with pgproxy (SSLRequest, then TLS verified against pgproxy's CA), so a
// test can speak protocol 3.2 inside it, which libpq 15 cannot.
class TlsClient {
 public:
  TlsClient(int port, const std::string& sni) {
    ctx_ = SSL_CTX_new(TLS_client_method());
    SSL_CTX_load_verify_locations(ctx_, (sandbox().dir + "/proxy-ca.crt").c_str(), nullptr);
    SSL_CTX_set_verify(ctx_, SSL_VERIFY_PEER, nullptr);
    ssl_ = SSL_new(ctx_);
    fd_ = connectTcp(port);
    std::string req;
    putU32(req, 8);
    putU32(req, kSslCode);
    char answer = 0;
    if (fd_ < 0 || write(fd_, req.data(), req.size()) != 8 || read(fd_, &answer, 1) != 1 ||
        answer != 'S') {
      error_ = "SSLRequest not answered with S";
      return;
    }
    SSL_set_fd(ssl_, fd_);
    SSL_set_tlsext_host_name(ssl_, sni.c_str());
    SSL_set1_host(ssl_, sni.c_str());
    if (SSL_connect(ssl_) != 1) {
      char buf[256];
      ERR_error_string_n(ERR_get_error(), buf, sizeof(buf));
      error_ = buf;
    }
  }
  ~TlsClient() {
    SSL_free(ssl_);
    SSL_CTX_free(ctx_);
    if (fd_ >= 0) {
      close(fd_);
    }
  }
  const std::string& error() const { return error_; }
  bool send(const std::string& bytes) {
    return SSL_write(ssl_, bytes.data(), static_cast<int>(bytes.size())) ==
           static_cast<int>(bytes.size());
  }
  // Reads until ReadyForQuery (true) or the end of the session.
  bool readUntilReady(std::string* got) {
    const std::string ready("Z\x00\x00\x00\x05I", 6);
    char buf[4096];
    while (got->find(ready) == std::string::npos) {
      int n = SSL_read(ssl_, buf, sizeof(buf));
      if (n <= 0) {
        return false;
      }
      got->append(buf, static_cast<std::size_t>(n));
    }
    return true;
  }

 private:
  SSL_CTX* ctx_ = nullptr;
  SSL* ssl_ = nullptr;
  int fd_ = -1;
  std::string error_;
};

void sendPlain(int port, const std::string& bytes) {
  int fd = connectTcp(port);
  ASSERT_GE(fd, 0);
  ASSERT_EQ(write(fd, bytes.data(), bytes.size()), static_cast<ssize_t>(bytes.size()));
  bool closed = false;
  std::string rest = readUntilClose(fd, seconds(10), &closed);
  close(fd);
  EXPECT_TRUE(closed);  // pgproxy, like PostgreSQL, answers a cancel by closing
  EXPECT_EQ(rest, "");
}

std::size_t count(const std::string& haystack, const std::string& needle) {
  std::size_t n = 0;
  for (auto at = haystack.find(needle); at != std::string::npos;
       at = haystack.find(needle, at + 1)) {
    ++n;
  }
  return n;
}

TEST(Protocol32, PlaintextLoginAndCancelWithA32ByteKey) {
  Pg18Backend pg;
  Proxy proxy(
      "debug: true\nmappings:\n  - {external: pg18.example.com, internal: 127.0.0.1, port: " +
      std::to_string(pg.port()) + "}\ndefault: pg18.example.com\n");
  int fd = connectTcp(proxy.port());
  ASSERT_GE(fd, 0);
  std::string startup =
      startupPacket({{"user", "postgres"}, {"database", "postgres"}}, kProtocol32);
  ASSERT_EQ(write(fd, startup.data(), startup.size()), static_cast<ssize_t>(startup.size()));
  std::string got;
  ASSERT_TRUE(readUntilReady(fd, &got)) << got << proxy.log();
  auto [pid, key] = backendKeyData(got);
  EXPECT_EQ(pid, Pg18Backend::kPid);
  EXPECT_EQ(key, pg.key());  // relayed whole
  EXPECT_EQ(pg.versions(), std::vector<std::uint32_t>{kProtocol32});

  // A key that differs in its last byte names no session: pgproxy decides so (the log line),
  // and only then is the right one sent, so the backend must see exactly one cancel.
  std::string wrong = pg.key();
  wrong.back() ^= 0x01;
  sendPlain(proxy.port(), cancelRequest(Pg18Backend::kPid, wrong));
  ASSERT_TRUE(eventually([&] {
    return proxy.log().find("(32-byte key) goes to 0 backend(s)") != std::string::npos;
  })) << proxy.log();
  sendPlain(proxy.port(), cancelRequest(Pg18Backend::kPid, pg.key()));
  ASSERT_TRUE(eventually([&] { return !pg.cancels().empty(); })) << proxy.log();
  EXPECT_EQ(pg.cancels(), std::vector<std::string>{cancelRequest(Pg18Backend::kPid, pg.key())});
  EXPECT_EQ(count(proxy.log(), "goes to 1 backend(s)"), 1u) << proxy.log();
  // The session itself lives on.
  std::string terminate("X\x00\x00\x00\x04", 5);
  EXPECT_EQ(write(fd, terminate.data(), terminate.size()), 5);
  close(fd);
}

TEST(Protocol32, TerminatedLoginAndCancelInsideAndOutsideTls) {
  Pg18Backend pg;
  const std::string sb = sandbox().dir + "/";
  Proxy proxy(
      "debug: true\nmappings:\n  - {external: host1.example.com, internal: 127.0.0.1, port: " +
      std::to_string(pg.port()) + ", tls: terminate, certificate: " + sb +
      "proxy-host1.crt, key: " + sb + "proxy-host1.key, backend_tls: disable}\n");
  TlsClient session(proxy.port(), "host1.example.com");
  ASSERT_EQ(session.error(), "");
  ASSERT_TRUE(
      session.send(startupPacket({{"user", "postgres"}, {"database", "postgres"}}, kProtocol32)));
  std::string got;
  ASSERT_TRUE(session.readUntilReady(&got)) << got << proxy.log();
  auto [pid, key] = backendKeyData(got);
  EXPECT_EQ(pid, Pg18Backend::kPid);
  EXPECT_EQ(key, pg.key());
  const std::string cancel = cancelRequest(Pg18Backend::kPid, pg.key());

  // PostgreSQL 17+ clients send the cancel through TLS again; older ones in plaintext.
  {
    TlsClient canceller(proxy.port(), "host1.example.com");
    ASSERT_EQ(canceller.error(), "");
    ASSERT_TRUE(canceller.send(cancel));
    ASSERT_TRUE(eventually([&] { return pg.cancels().size() == 1; })) << proxy.log();
  }
  sendPlain(proxy.port(), cancel);
  ASSERT_TRUE(eventually([&] { return pg.cancels().size() == 2; })) << proxy.log();
  EXPECT_EQ(pg.cancels(), (std::vector<std::string>{cancel, cancel}));
}

// A 3.2 client through pgproxy to a real PostgreSQL 15: the server answers
// NegotiateProtocolVersion and serves it at 3.0 with a 4-byte key, which cancels as before.
TEST(Protocol32, OlderServerNegotiatesDownAndCancelStillWorks) {
  Proxy proxy(
      "debug: true\nmappings:\n  - {external: host1.example.com, internal: 127.0.0.1, port: "
      "{P1}}\ndefault: host1.example.com\n");
  int fd = connectTcp(proxy.port());
  ASSERT_GE(fd, 0);
  std::string startup =
      startupPacket({{"user", "postgres"}, {"database", "postgres"}}, kProtocol32);
  ASSERT_EQ(write(fd, startup.data(), startup.size()), static_cast<ssize_t>(startup.size()));
  std::string got;
  ASSERT_TRUE(readUntilReady(fd, &got)) << got << proxy.log();
  ASSERT_EQ(got[0], 'v');  // NegotiateProtocolVersion: newest minor version 0
  EXPECT_EQ(getU32(got, 5), 3u << 16);
  auto [pid, key] = backendKeyData(got);
  ASSERT_EQ(key.size(), 4u);
  std::string query = message('Q', std::string("select pg_sleep(31)\0", 20));
  ASSERT_EQ(write(fd, query.data(), query.size()), static_cast<ssize_t>(query.size()));
  PGconn* watcher = PQconnectdb(direct(sandbox().port1).c_str());
  ASSERT_TRUE(eventually([&] {
    PGresult* r = PQexec(watcher,
                         "select count(*) from pg_stat_activity where query = 'select "
                         "pg_sleep(31)' and state = 'active'");
    bool running = PQntuples(r) == 1 && std::string(PQgetvalue(r, 0, 0)) == "1";
    PQclear(r);
    return running;
  }));
  PQfinish(watcher);
  sendPlain(proxy.port(), cancelRequest(pid, key));
  std::string answer;
  readUntilReady(fd, &answer, seconds(20));
  EXPECT_EQ(sqlstateOf(answer), "57014") << answer;
  close(fd);
}

}  // namespace
}  // namespace pgproxy::it
