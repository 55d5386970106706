// idle_timeout, tcp_keepalive and tcp_user_timeout (issue 9): sessions whose peer went silent or
// vanished are found and closed, with a log line.
#include <arpa/inet.h>
#include <gtest/gtest.h>
#include <libpq-fe.h>
#include <linux/filter.h>
#include <netinet/in.h>
#include <poll.h>
#include <sys/socket.h>
#include <unistd.h>

#include <atomic>
#include <string>
#include <thread>

#include "harness.h"

namespace pgproxy::it {
namespace {

using std::chrono::milliseconds;
using std::chrono::seconds;

// Makes a socket vanish as a dead host or a dropped route would: a socket filter that drops every
// segment before TCP sees it, so nothing is acknowledged and no RST is sent.
void blackhole(int fd) {
  sock_filter drop[] = {{BPF_RET | BPF_K, 0, 0, 0}};
  sock_fprog prog{1, drop};
  ASSERT_EQ(setsockopt(fd, SOL_SOCKET, SO_ATTACH_FILTER, &prog, sizeof(prog)), 0);
}

// A plaintext session logged in as postgres (trust) through the proxy; -1 on failure.
int rawSession(int port) {
  int fd = connectTcp(port);
  std::string startup = startupPacket({{"user", "postgres"}, {"database", "postgres"}});
  if (fd < 0 || write(fd, startup.data(), startup.size()) != static_cast<ssize_t>(startup.size())) {
    return -1;
  }
  std::string got;
  if (readUntilReady(fd, &got)) {
    return fd;
  }
  close(fd);
  return -1;
}

TEST(Timeouts, IdleTimeoutClosesOnlyTheSilentSession) {
  Proxy proxy(
      "idle_timeout: 3s\nmappings:\n"
      "  - {external: host1.example.com, internal: 127.0.0.1, port: {P1}}\n");
  PGconn* idle = PQconnectdb(proxy.plain().c_str());
  PGconn* busy = PQconnectdb(proxy.tls("host1").c_str());
  ASSERT_EQ(PQstatus(idle), CONNECTION_OK) << PQerrorMessage(idle);
  ASSERT_EQ(PQstatus(busy), CONNECTION_OK) << PQerrorMessage(busy);
  // The busy session talks every 100 ms for twice the timeout; the idle one says nothing.
  auto until = std::chrono::steady_clock::now() + seconds(6);
  while (std::chrono::steady_clock::now() < until) {
    PGresult* r = PQexec(busy, "select 1");
    ASSERT_EQ(PQresultStatus(r), PGRES_TUPLES_OK) << PQerrorMessage(busy);
    PQclear(r);
    std::this_thread::sleep_for(milliseconds(100));
  }
  // A plaintext client reads what PostgreSQL's idle_session_timeout sends.
  PGresult* r = PQexec(idle, "select 1");
  EXPECT_NE(PQresultStatus(r), PGRES_TUPLES_OK);
  EXPECT_NE(std::string(PQerrorMessage(idle)).find("idle-session timeout"), std::string::npos)
      << PQerrorMessage(idle);
  PQclear(r);
  EXPECT_NE(proxy.log().find("(idle_timeout); closing"), std::string::npos) << proxy.log();
  EXPECT_NE(proxy.log().find("outcome=idle_timeout"), std::string::npos);
  PQfinish(idle);
  PQfinish(busy);
}

TEST(Timeouts, KeepaliveFindsAClientThatVanished) {
  Proxy proxy(
      "tcp_keepalive: {idle: 1s, interval: 1s, count: 2}\nmappings:\n"
      "  - {external: host1.example.com, internal: 127.0.0.1, port: {P1}}\n");
  int fd = rawSession(proxy.port());
  ASSERT_GE(fd, 0);
  blackhole(fd);  // the client is gone without a FIN: only keepalive can tell
  EXPECT_TRUE(eventually([&] { return proxy.log().find("stopped answering") != std::string::npos; },
                         seconds(30)))
      << proxy.log();
  EXPECT_NE(proxy.log().find("client 127.0.0.1:"), std::string::npos);
  EXPECT_NE(proxy.log().find("outcome=peer_timeout"), std::string::npos);
  close(fd);
  EXPECT_EQ(psql(proxy.plain(), "select 2").output, "2\n");
}

// Sits between pgproxy and PostgreSQL, relaying both ways, until told to vanish.
class VanishingRelay {
 public:
  explicit VanishingRelay(int backend_port) : backend_port_(backend_port) {
    listen_fd_ = listenLoopback(&port_);
    thread_ = std::thread([this] { serve(); });
  }
  ~VanishingRelay() {
    stop_ = true;
    thread_.join();
    for (int fd : {listen_fd_, front_, back_}) {
      if (fd >= 0) {
        close(fd);
      }
    }
  }
  int port() const { return port_; }
  void vanish() { vanish_ = true; }
  bool vanished() const { return vanished_; }

 private:
  void serve() {
    pollfd l{listen_fd_, POLLIN, 0};
    while (!stop_ && poll(&l, 1, 100) <= 0) {
    }
    if (stop_) {
      return;
    }
    front_ = accept(listen_fd_, nullptr, nullptr);
    back_ = connectTcp(backend_port_);
    char buf[16384];
    while (!stop_) {
      if (vanish_ && !vanished_) {
        blackhole(front_);
        vanished_ = true;
      }
      if (vanished_) {
        std::this_thread::sleep_for(milliseconds(50));
        continue;
      }
      pollfd p[2] = {{front_, POLLIN, 0}, {back_, POLLIN, 0}};
      if (poll(p, 2, 50) <= 0) {
        continue;
      }
      for (int i = 0; i < 2; ++i) {
        if (p[i].revents & (POLLIN | POLLHUP | POLLERR)) {
          ssize_t n = read(p[i].fd, buf, sizeof(buf));
          if (n <= 0) {
            return;
          }
          if (write(p[1 - i].fd, buf, static_cast<std::size_t>(n)) != n) {
            return;
          }
        }
      }
    }
  }

  int backend_port_;
  int listen_fd_ = -1, front_ = -1, back_ = -1;
  int port_ = 0;
  std::atomic<bool> stop_{false}, vanish_{false}, vanished_{false};
  std::thread thread_;
};

TEST(Timeouts, UserTimeoutFindsABackendThatVanishedMidQuery) {
  VanishingRelay relay(sandbox().port1);
  Proxy proxy(
      "tcp_keepalive: off\ntcp_user_timeout: 2s\nmappings:\n"
      "  - {external: host1.example.com, internal: 127.0.0.1, port: " +
      std::to_string(relay.port()) + "}\n");
  PGconn* c = PQconnectdb(proxy.plain().c_str());
  ASSERT_EQ(PQstatus(c), CONNECTION_OK) << PQerrorMessage(c);
  PGresult* r = PQexec(c, "select 1");
  EXPECT_EQ(PQresultStatus(r), PGRES_TUPLES_OK);
  PQclear(r);
  relay.vanish();
  ASSERT_TRUE(eventually([&] { return relay.vanished(); }));
  // The query reaches a backend that never acknowledges it: pgproxy gives up after the user
  // timeout and closes the client, which sees the connection end instead of hanging forever.
  r = PQexec(c, "select 1");
  EXPECT_NE(PQresultStatus(r), PGRES_TUPLES_OK);
  PQclear(r);
  EXPECT_TRUE(eventually([&] { return proxy.log().find("stopped answering") != std::string::npos; },
                         seconds(30)))
      << proxy.log();
  EXPECT_NE(proxy.log().find("backend 127.0.0.1:" + std::to_string(relay.port())),
            std::string::npos);
  PQfinish(c);
}

}  // namespace
}  // namespace pgproxy::it
