// Backend groups (issue 8): balancing policies, connect retries, passive and active health, all
// backends down, and the health-check process. The two sandbox clusters are the backends; a
// second pgproxy in front of host2 plays a backend that can be taken away and brought back
// without stopping a cluster the other tests share.
#include <arpa/inet.h>
#include <gtest/gtest.h>
#include <libpq-fe.h>
#include <netinet/in.h>
#include <signal.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <unistd.h>

#include <atomic>
#include <map>
#include <regex>
#include <string>
#include <thread>
#include <vector>

#include "harness.h"

namespace pgproxy::it {
namespace {

using std::chrono::milliseconds;
using std::chrono::seconds;

std::string cluster(PGconn* c) {
  PGresult* r = PQexec(c, "show cluster_name");
  std::string out = PQresultStatus(r) == PGRES_TUPLES_OK ? PQgetvalue(r, 0, 0) : "error";
  PQclear(r);
  return out;
}

// Health checks of a failing backend logged after byte `from` of `log`, with `debug: true`: each
// failed check logs either the debug line "health check of KEY failed" or, when it takes the
// backend down, "backend KEY ... is down". The positive signal that checks kept running, so a
// test can then count how often a state change was logged.
long checksLoggedAfter(const std::string& log, std::size_t from, const std::string& key_pattern) {
  std::regex check("health check of " + key_pattern + " failed|backend " + key_pattern +
                   " of \"[^\"]*\" is down");
  if (from > log.size()) {
    return 0;
  }
  return std::distance(
      std::sregex_iterator(log.begin() + static_cast<std::ptrdiff_t>(from), log.end(), check),
      std::sregex_iterator());
}

// Connects `n` times (plaintext, the mapping is the default) and counts the clusters reached.
std::map<std::string, int> spread(const Proxy& proxy, int n) {
  std::map<std::string, int> out;
  for (int i = 0; i < n; ++i) {
    PGconn* c = PQconnectdb(proxy.plain().c_str());
    out[PQstatus(c) == CONNECTION_OK ? cluster(c) : PQerrorMessage(c)] += 1;
    PQfinish(c);
  }
  return out;
}

std::string metricsOf(int port) {
  return httpGet(port, "/metrics").body;
}

TEST(Backends, WeightedRoundRobinSharesNewSessions) {
  Proxy proxy(
      "mappings:\n  - external: db.example.com\n    backends:\n"
      "      - {host: 127.0.0.1, port: {P1}, weight: 3}\n      - {host: 127.0.0.1, port: {P2}}\n");
  auto s = spread(proxy, 400);
  EXPECT_EQ(s["host1"] + s["host2"], 400) << s.size();
  EXPECT_NEAR(s["host1"] / 400.0, 0.75, 0.03) << s["host1"] << "/" << s["host2"];
  EXPECT_NE(proxy.log().find("backend=\"127.0.0.1:" + std::to_string(sandbox().port2) + "\""),
            std::string::npos);
}

TEST(Backends, LeastConnCountsSessionsAcrossWorkersAndMappings) {
  int admin = freePort();
  Proxy proxy("admin: {listen: \"127.0.0.1:" + std::to_string(admin) +
              "\"}\ndefault: db.example.com\nmappings:\n"
              "  - {external: pinned.example.com, internal: 127.0.0.1, port: {P1}}\n"
              "  - external: db.example.com\n    balance: least_conn\n    backends:\n"
              "      - {host: 127.0.0.1, port: {P1}}\n      - {host: 127.0.0.1, port: {P2}}\n");
  // Five long sessions on host1 through another mapping (passthrough TLS, another worker too).
  std::vector<PGconn*> held;
  for (int i = 0; i < 5; ++i) {
    held.push_back(PQconnectdb(proxy.tls("pinned", "require").c_str()));
    ASSERT_EQ(PQstatus(held.back()), CONNECTION_OK) << PQerrorMessage(held.back());
  }
  std::string key1 = "127.0.0.1:" + std::to_string(sandbox().port1);
  EXPECT_NE(metricsOf(admin).find("pgproxy_backend_sessions_active{mapping=\"db.example.com\","
                                  "backend=\"" +
                                  key1 + "\"} 5"),
            std::string::npos)
      << metricsOf(admin);
  // New sessions on db.example.com go to host2 while host1 has more.
  std::vector<PGconn*> fresh;
  for (int i = 0; i < 5; ++i) {
    fresh.push_back(PQconnectdb(proxy.plain().c_str()));
    EXPECT_EQ(cluster(fresh.back()), "host2") << i;
  }
  for (PGconn* c : held) {
    PQfinish(c);
  }
  for (PGconn* c : fresh) {
    PQfinish(c);
  }
}

TEST(Backends, FirstSendsEverythingToTheFirstAndRetriesPastADeadOne) {
  int admin = freePort();
  Proxy proxy("admin: {listen: \"127.0.0.1:" + std::to_string(admin) +
              "\"}\nmappings:\n  - external: host1.example.com\n    balance: first\n"
              "    backends:\n      - {host: 127.0.0.1, port: {DEAD}}\n"
              "      - {host: 127.0.0.1, port: {P1}}\n      - {host: 127.0.0.1, port: {P2}}\n");
  // The dead first backend costs a retry, never an error, here for TLS passthrough (the
  // ClientHello waits for a backend that answers); after that it is down (passive, no checks:
  // one failure) and skipped, and everything goes to the next one.
  EXPECT_EQ(psql(proxy.tls("host1"), "show cluster_name").output, "host1\n");
  auto s = spread(proxy, 20);
  EXPECT_EQ(s["host1"], 20) << s.size();
  EXPECT_NE(proxy.log().find("trying 127.0.0.1:" + std::to_string(sandbox().port1)),
            std::string::npos)
      << proxy.log();
  std::string m = metricsOf(admin);
  EXPECT_NE(m.find("pgproxy_backend_up{mapping=\"host1.example.com\",backend=\"127.0.0.1:" +
                   std::to_string(sandbox().port1) + "\"} 1"),
            std::string::npos)
      << m;
  EXPECT_NE(m.find("\"} 0\n"), std::string::npos) << m;  // the dead one
}

// A backend that accepts, reads what comes, and closes without a byte (a server dying, a listener
// closing with connections in its backlog): the session starts over on the next backend with
// the same StartupMessage, and the client never knows.
TEST(Backends, BackendClosingBeforeItsFirstByteIsReplayedElsewhere) {
  int closerFd = socket(AF_INET, SOCK_STREAM, 0);
  sockaddr_in sa{};
  sa.sin_family = AF_INET;
  sa.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
  ASSERT_EQ(bind(closerFd, reinterpret_cast<sockaddr*>(&sa), sizeof(sa)), 0);
  socklen_t len = sizeof(sa);
  getsockname(closerFd, reinterpret_cast<sockaddr*>(&sa), &len);
  listen(closerFd, 16);
  std::atomic<int> closed{0};
  std::thread closer([&] {
    for (;;) {
      int c = accept(closerFd, nullptr, nullptr);
      if (c < 0) {
        return;
      }
      char buf[256];
      (void)read(c, buf, sizeof(buf));
      close(c);
      ++closed;
    }
  });
  Proxy proxy(
      "mappings:\n  - external: db.example.com\n    balance: first\n    backends:\n"
      "      - {host: 127.0.0.1, port: " +
      std::to_string(ntohs(sa.sin_port)) + "}\n      - {host: 127.0.0.1, port: {P2}}\n");
  EXPECT_EQ(psql(proxy.plain(), "show cluster_name").output, "host2\n");
  EXPECT_GE(closed.load(), 1);
  EXPECT_NE(proxy.log().find("closed the connection before answering; trying 127.0.0.1:" +
                             std::to_string(sandbox().port2)),
            std::string::npos)
      << proxy.log();
  shutdown(closerFd, SHUT_RDWR);
  close(closerFd);
  closer.join();
}

TEST(Backends, AllDownRefusesWithTheMappingNamedAndReadyzTurns503) {
  int admin = freePort();
  int dead2 = freePort();
  Proxy checked("debug: true\nadmin: {listen: \"127.0.0.1:" + std::to_string(admin) +
                "\"}\nmappings:\n  - external: db.example.com\n"
                "    health_check: {interval: 100ms, timeout: 100ms, fall: 1, rise: 1}\n"
                "    backends:\n      - {host: 127.0.0.1, port: {DEAD}}\n"
                "      - {host: 127.0.0.1, port: " +
                std::to_string(dead2) + "}\n");
  // 503 comes first for "not serving yet" while the workers start; wait for the mapping's reason.
  ASSERT_TRUE(eventually([&] {
    auto r = httpGet(admin, "/readyz");
    return r.status == 503 && r.body.find("mapping db.example.com") != std::string::npos;
  })) << httpGet(admin, "/readyz").body;
  auto r = psql(checked.plain(), "select 1");
  EXPECT_NE(r.exit_code, 0);
  EXPECT_NE(r.output.find("no backend for \"db.example.com\" is available: all 2 backends are "
                          "down"),
            std::string::npos)
      << r.output;
  int fd = connectTcp(checked.port());
  std::string startup = startupPacket({{"user", "postgres"}, {"database", "postgres"}});
  ASSERT_EQ(write(fd, startup.data(), startup.size()), static_cast<ssize_t>(startup.size()));
  bool closed = false;
  EXPECT_EQ(sqlstateOf(readUntilClose(fd, seconds(10), &closed)), "57P03");
  close(fd);
  // State changes are logged once, not every interval: after the first "is down", wait until
  // three more checks of that backend were logged (whatever they logged), then count.
  std::string key = "127.0.0.1:" + std::to_string(dead2);
  std::string down = "backend " + key + " of \"db.example.com\" is down";
  std::string log;
  ASSERT_TRUE(eventually([&] {
    log = checked.log();
    std::size_t first = log.find(down);
    return first != std::string::npos &&
           checksLoggedAfter(log, first + down.size(),
                             "127\\.0\\.0\\.1:" + std::to_string(dead2)) >= 3;
  })) << log;
  EXPECT_EQ(log.find(down), log.rfind(down)) << log;

  // Without checks nothing but a session could bring them back, so they are tried: 08006.
  Proxy passive(
      "mappings:\n  - external: db.example.com\n    backends:\n"
      "      - {host: 127.0.0.1, port: {DEAD}}\n      - {host: 127.0.0.1, port: " +
      std::to_string(dead2) + "}\n");
  auto p = psql(passive.plain(), "select 1");
  EXPECT_NE(p.output.find("could not connect to any backend for \"db.example.com\""),
            std::string::npos)
      << p.output;
}

TEST(Backends, FailoverAndRecoveryUnderConnectionPerTransactionLoseNothing) {
  // A second pgproxy in front of host2 is the backend that goes away and comes back.
  int flappingPort = freePort();
  const std::string flappingBody =
      "mappings:\n  - {external: x.example.com, internal: 127.0.0.1, "
      "port: {P2}}\n";
  Proxy proxy(
      "mappings:\n  - external: db.example.com\n"
      "    health_check: {interval: 200ms, timeout: 200ms, fall: 2, rise: 2}\n"
      "    backends:\n      - {host: 127.0.0.1, port: {P1}}\n"
      "      - {host: 127.0.0.1, port: " +
      std::to_string(flappingPort) + "}\n");
  std::string dir = tempDir("pgproxy-failover");
  writeFile(dir + "/select.sql", "select 1;\n");
  CommandResult bench;
  std::thread runner([&] {
    bench = run({"pgbench", "-n", "-C", "-c", "4", "-j", "2", "-T", "8", "-f", dir + "/select.sql",
                 proxy.plain()},
                seconds(120));
  });
  std::string key = "127.0.0.1:" + std::to_string(flappingPort);
  // Down at first: retries cover the window until the checks take it out.
  EXPECT_TRUE(eventually([&] {
    return proxy.log().find("backend " + key + " of \"db.example.com\" is down") !=
           std::string::npos;
  })) << proxy.log();
  std::this_thread::sleep_for(seconds(1));
  {
    // It comes back: after rise x interval it gets sessions again.
    Proxy flapping(flappingBody, 1, "", flappingPort);
    EXPECT_TRUE(eventually([&] {
      return proxy.log().find("backend " + key + " of \"db.example.com\" is up again") !=
             std::string::npos;
    })) << proxy.log();
    // A pgbench session (plaintext), not just a health probe (passthrough), went through it.
    std::regex served("mode=plaintext .* outcome=ok");
    EXPECT_TRUE(eventually([&] {
      std::string l = flapping.log();
      return std::regex_search(l, served);
    })) << flapping.log();
    // And goes away gracefully (sessions in flight finish), to be found down again.
    flapping.signal("quit");
    flapping.waitExit(seconds(20));
  }
  runner.join();
  EXPECT_EQ(bench.exit_code, 0) << bench.output;
  EXPECT_NE(bench.output.find("number of failed transactions: 0"), std::string::npos)
      << bench.output;
  EXPECT_EQ(bench.output.find("aborted"), std::string::npos) << bench.output;
  run({"rm", "-rf", dir});
}

TEST(Backends, HealthCheckerIsRespawnedAndReloadKeepsState) {
  Proxy proxy(
      "debug: true\nmappings:\n  - external: db.example.com\n"
      "    health_check: {interval: 100ms, timeout: 100ms, fall: 1, rise: 1}\n"
      "    backends:\n      - {host: 127.0.0.1, port: {P1}}\n"
      "      - {host: 127.0.0.1, port: {DEAD}}\n");
  std::regex running("\\[health (\\d+)\\] info: health checker running");
  std::smatch m;
  std::string log;
  ASSERT_TRUE(eventually([&] {
    log = proxy.log();
    return std::regex_search(log, m, running);
  })) << log;
  pid_t checker = std::stoi(m[1]);
  ASSERT_EQ(kill(checker, SIGKILL), 0);
  EXPECT_TRUE(eventually([&] {
    return proxy.log().find("health checker " + std::to_string(checker) + " was killed") !=
           std::string::npos;
  })) << proxy.log();
  EXPECT_TRUE(eventually([&] {
    std::string l = proxy.log();
    std::ptrdiff_t n =
        std::distance(std::sregex_iterator(l.begin(), l.end(), running), std::sregex_iterator());
    return n >= 2;
  })) << proxy.log();
  // A reload keeps the dead backend's state: it is not announced down a second time. The third
  // checker has run three checks of it (each logs a line) before the count.
  std::string down = "is down";
  ASSERT_EQ(proxy.signal("reload").exit_code, 0);
  EXPECT_TRUE(eventually([&] {
    log = proxy.log();
    std::sregex_iterator it(log.begin(), log.end(), running), end;
    if (std::distance(it, end) < 3) {
      return false;
    }
    std::size_t third = 0;
    for (int i = 0; i < 3; ++i, ++it) {
      third = static_cast<std::size_t>(it->position());
    }
    return checksLoggedAfter(log, third, "127\\.0\\.0\\.1:[0-9]+") >= 3;
  })) << log;
  EXPECT_EQ(log.find(down), log.rfind(down)) << log;
  EXPECT_EQ(spread(proxy, 10)["host1"], 10);
}

}  // namespace
}  // namespace pgproxy::it

namespace pgproxy::it {
namespace {

// role: primary / standby, with logged-in SCRAM checks, across a promotion. Its own primary and
// streaming standby (pg_basebackup), since the test stops the primary.
TEST(Backends, RolesFollowAPromotionWithoutAReload) {
  int primaryPort = freePort(), standbyPort = freePort();
  ASSERT_EQ(sandboxCommand("primary", {"rp", std::to_string(primaryPort)}).exit_code, 0);
  auto standby =
      sandboxCommand("standby", {"rs", std::to_string(standbyPort), std::to_string(primaryPort)});
  ASSERT_EQ(standby.exit_code, 0) << standby.output;
  ASSERT_EQ(psql(direct(primaryPort),
                 "set password_encryption = 'scram-sha-256'; "
                 "create role pgproxy_scram login password 'health-secret'")
                .exit_code,
            0);
  std::string dir = tempDir("pgproxy-roles");
  writeFile(dir + "/health.pass", "health-secret\n");
  std::string group =
      "    backends:\n      - {host: 127.0.0.1, port: " + std::to_string(primaryPort) +
      "}\n      - {host: 127.0.0.1, port: " + std::to_string(standbyPort) +
      "}\n    health_check: {interval: 200ms, timeout: 2s, fall: 1, rise: 1, "
      "user: pgproxy_scram, password_file: " +
      dir + "/health.pass}\n";
  Proxy proxy(
      "default: rw.example.com\nmappings:\n  - external: rw.example.com\n    role: primary\n" +
      group + "  - external: ro.example.com\n    role: standby\n" + group);
  auto ro = [&] {
    return "host=ro.example.com hostaddr=127.0.0.1 port=" + std::to_string(proxy.port()) +
           " sslmode=require user=postgres dbname=postgres connect_timeout=20";
  };
  const std::string sql = "select current_setting('cluster_name') || ' ' || pg_is_in_recovery()";
  EXPECT_TRUE(eventually([&] { return psql(proxy.plain(), sql).output == "rp false\n"; }))
      << psql(proxy.plain(), sql).output << proxy.log();
  EXPECT_TRUE(eventually([&] { return psql(ro(), sql).output == "rs true\n"; }))
      << psql(ro(), sql).output;
  for (int i = 0; i < 10; ++i) {
    EXPECT_EQ(psql(proxy.plain(), sql).output, "rp false\n");
    EXPECT_EQ(psql(ro(), sql).output, "rs true\n");
  }
  // Promote the standby and stop the old primary: rw follows, with no reload.
  ASSERT_EQ(sandboxCommand("promote", {"rs"}).exit_code, 0);
  ASSERT_EQ(sandboxCommand("stop-one", {"rp"}).exit_code, 0);
  EXPECT_TRUE(eventually([&] { return psql(proxy.plain(), sql).output == "rs false\n"; }))
      << psql(proxy.plain(), sql).output << proxy.log();
  EXPECT_NE(proxy.log().find("is now primary (was standby)"), std::string::npos) << proxy.log();
  // No standby is left: ro clients are told so (TLS passthrough: an alert).
  auto none = psql(ro(), "select 1");
  EXPECT_NE(none.exit_code, 0);
  EXPECT_EQ(proxy.log().find("health-secret"), std::string::npos);
  sandboxCommand("stop-one", {"rs"});
  run({"rm", "-rf", dir, sandbox().dir + "/rp", sandbox().dir + "/rs"});
}

}  // namespace
}  // namespace pgproxy::it

namespace pgproxy::it {
namespace {

// A stand-in backend that accepts connections and closes each one after reading what the client
// sent first; with `ssl_answer` it first answers an SSLRequest with that byte ('S': and closes
// once the ClientHello arrives, as a PostgreSQL that dies mid-handshake does).
class ClosingBackend {
 public:
  explicit ClosingBackend(char ssl_answer) {
    fd_ = listenLoopback(&port_);
    thread_ = std::thread([this, ssl_answer] {
      for (;;) {
        int c = accept(fd_, nullptr, nullptr);
        if (c < 0) {
          return;
        }
        char buf[512];
        ssize_t n = read(c, buf, sizeof(buf));
        if (ssl_answer && n == 8) {
          (void)write(c, &ssl_answer, 1);
          if (ssl_answer == 'S') {
            (void)read(c, buf, sizeof(buf));
          }
        }
        close(c);
        ++closed_;
      }
    });
  }
  ~ClosingBackend() {
    shutdown(fd_, SHUT_RDWR);
    close(fd_);
    thread_.join();
  }
  int port() const { return port_; }
  int closed() const { return closed_.load(); }

 private:
  int fd_ = -1;
  int port_ = 0;
  std::atomic<int> closed_{0};
  std::thread thread_;
};

std::string sandboxFile(const std::string& name) {
  return sandbox().dir + "/" + name;
}

// The first backend takes the session and closes before its first byte; the retry's connect to
// the second backend fails (nothing listens, or with `second_says_no` it answers N to the
// SSLRequest). The refusal then goes out after the splice has started (the client's socket has
// left its bufferevent): it used to dereference the freed bufferevent and kill the worker with
// every session on it.
void expectRefusedAfterFailedRetry(const std::string& mode, bool second_says_no = false) {
  bool passthrough = mode == "passthrough";
  ClosingBackend first(passthrough ? 'S' : 0);
  ClosingBackend second('N');
  std::string backends = "    balance: first\n    backends:\n      - {host: 127.0.0.1, port: " +
                         std::to_string(first.port()) + "}\n      - {host: 127.0.0.1, port: " +
                         (second_says_no ? std::to_string(second.port()) : "{DEAD}") + "}\n";
  std::string body;
  if (mode == "terminate") {
    body = "mappings:\n  - external: host1.example.com\n    tls: terminate\n    certificate: " +
           sandboxFile("proxy-host1.crt") + "\n    key: " + sandboxFile("proxy-host1.key") +
           "\n    backend_tls: disable\n" + backends;
  } else {
    body = "mappings:\n  - external: host1.example.com\n" + backends;
  }
  Proxy proxy(body);
  ASSERT_TRUE(eventually([&] { return childrenOf(proxy.pid()).size() == 2; }));
  std::vector<pid_t> workers = childrenOf(proxy.pid());
  std::string conninfo;
  if (mode == "terminate") {
    conninfo = "host=host1.example.com hostaddr=127.0.0.1 port=" + std::to_string(proxy.port()) +
               " sslmode=verify-full sslrootcert=" + sandboxFile("proxy-ca.crt") +
               " user=postgres dbname=postgres connect_timeout=20 gssencmode=disable";
  } else if (passthrough) {
    conninfo = proxy.tls("host1");
  } else {
    conninfo = proxy.plain();
  }
  // The first backend is marked down by the first session (passive health), so the later ones
  // may skip it; the first is the one on the path that crashed.
  for (int i = 0; i < 4; ++i) {
    auto r = psql(conninfo, "select 1");
    EXPECT_NE(r.exit_code, 0) << mode;
    if (passthrough) {
      EXPECT_NE(r.output.find("alert internal error"), std::string::npos) << r.output;
    } else {
      EXPECT_NE(r.output.find("could not connect to any backend for \"host1.example.com\""),
                std::string::npos)
          << mode << ": " << r.output;
    }
  }
  EXPECT_GE(first.closed(), 1) << mode;
  EXPECT_NE(proxy.log().find("closed the connection before answering; trying 127.0.0.1:"),
            std::string::npos)
      << proxy.log();
  EXPECT_EQ(childrenOf(proxy.pid()), workers) << mode << "\n" << proxy.log();
}

TEST(Backends, FailedRetryAfterTheSpliceStartedRefusesPassthrough) {
  expectRefusedAfterFailedRetry("passthrough");
}

TEST(Backends, FailedRetryToABackendAnsweringNRefusesPassthrough) {
  expectRefusedAfterFailedRetry("passthrough", /*second_says_no=*/true);
}

TEST(Backends, FailedRetryAfterTheSpliceStartedRefusesPlaintext) {
  expectRefusedAfterFailedRetry("plaintext");
}

TEST(Backends, FailedRetryAfterTheSpliceStartedRefusesTerminated) {
  expectRefusedAfterFailedRetry("terminate");
}

}  // namespace
}  // namespace pgproxy::it

namespace pgproxy::it {
namespace {

// Starts pgproxy in a mount namespace whose /etc/hosts is `hosts`: names with several addresses
// without touching the machine's resolver configuration. Returns the wrapper to run as pgproxy.
std::string withHostsFile(const std::string& dir, const std::string& hosts) {
  writeFile(dir + "/hosts", hosts);
  std::string wrapper = dir + "/pgproxy-with-hosts";
  writeFile(wrapper, "#!/bin/sh\nexec unshare " + std::string(geteuid() == 0 ? "-m" : "-rm") +
                         " -- sh -c 'mount --bind \"$1\" /etc/hosts && shift && exec \"$@\"' sh " +
                         dir + "/hosts " + proxyBinary() + " \"$@\"\n");
  chmod(wrapper.c_str(), 0755);
  return wrapper;
}

// internal: a name with two addresses, the first of which refuses connections. Like libpq,
// pgproxy tries the next address, for sessions and for health checks alike.
TEST(Backends, AHostNameWithSeveralAddressesIsTriedAddressByAddress) {
  std::string dir = tempDir("pgproxy-hosts");
  std::string wrapper = withHostsFile(
      dir,
      "127.0.0.1 localhost\n127.0.0.3 multi.pgproxy.test\n127.0.0.1 multi.pgproxy.test\n"
      "127.0.0.3 none.pgproxy.test\n127.0.0.4 none.pgproxy.test\n");
  std::string port = std::to_string(sandbox().port1);
  Proxy proxy(
      "default: a.example.com\nmappings:\n  - external: a.example.com\n"
      "    backends: [{host: multi.pgproxy.test, port: " +
          port +
          "}]\n  - external: b.example.com\n    backends: [{host: none.pgproxy.test, port: " +
          port +
          "}]\n"
          // role: primary needs a logged-in health check to have succeeded: through the second
          // address only.
          "  - external: c.example.com\n    role: primary\n"
          "    health_check: {interval: 100ms, timeout: 2s, fall: 1, rise: 1, user: postgres}\n"
          "    backends: [{host: multi.pgproxy.test, port: " +
          port + "}]\n",
      2, wrapper);
  EXPECT_EQ(psql(proxy.plain(), "show cluster_name").output, "host1\n") << proxy.log();
  EXPECT_NE(proxy.log().find("backend multi.pgproxy.test:" + port + ": address 127.0.0.3:" + port +
                             " failed (Connection refused"),
            std::string::npos)
      << proxy.log();
  auto none = psql("host=b.example.com hostaddr=127.0.0.1 port=" + std::to_string(proxy.port()) +
                       " sslmode=require user=postgres dbname=postgres connect_timeout=20",
                   "select 1");
  EXPECT_NE(none.exit_code, 0);
  EXPECT_NE(none.output.find("alert internal error"), std::string::npos) << none.output;
  EXPECT_NE(proxy.log().find("Connection refused (errno 111) (tried its 2 addresses)"),
            std::string::npos)
      << proxy.log();
  std::string c = "host=c.example.com hostaddr=127.0.0.1 port=" + std::to_string(proxy.port()) +
                  " sslmode=require sslrootcert=" + sandbox().ca() +
                  " user=postgres dbname=postgres connect_timeout=20";
  EXPECT_TRUE(eventually([&] { return psql(c, "show cluster_name").output == "host1\n"; }))
      << psql(c, "show cluster_name").output << proxy.log();
  run({"rm", "-rf", dir});
}

}  // namespace
}  // namespace pgproxy::it
