// Zero-downtime lifecycle: reload, drain, quit, reopen, worker crash and binary upgrade, each under
// real client load against real PostgreSQL.
#include <gtest/gtest.h>
#include <libpq-fe.h>
#include <signal.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/un.h>
#include <unistd.h>

#include <algorithm>
#include <atomic>
#include <cstring>
#include <regex>
#include <thread>

#include "harness.h"

namespace pgproxy::it {
namespace {

using std::chrono::milliseconds;
using std::chrono::seconds;

bool alive(pid_t pid) {
  return pid > 0 && kill(pid, 0) == 0;
}

std::string clusterOf(PGconn* conn) {
  PGresult* r = PQexec(conn, "show cluster_name");
  std::string out = PQresultStatus(r) == PGRES_TUPLES_OK ? PQgetvalue(r, 0, 0) : "";
  PQclear(r);
  return out;
}

std::string mappingTo(const char* port, const std::string& extra = "") {
  return extra +
         "max_draining_generations: 64\nmappings:\n"
         "  - {external: host1.example.com, internal: 127.0.0.1, port: " +
         std::string(port) +
         "}\n  - {external: host2.example.com, internal: 127.0.0.1, port: {P2}}\n";
}

void makeLedger() {
  ASSERT_EQ(psql(direct(sandbox().port2),
                 "drop table if exists ledger; create table ledger(id bigserial primary key, "
                 "c int, t timestamptz default now())")
                .exit_code,
            0);
}

// pgbench inserts one ledger row per transaction through pgproxy (TLS) while 20 reloads alternate
// two configurations. Pass: exit 0, processed N/N, failed 0, no abort, and N rows.
void ledgerUnderReloads(bool connectPerTransaction) {
  Proxy proxy(mappingTo("{P1}", "connect_timeout: 5s\n"), 2);
  makeLedger();
  std::string dir = tempDir("pgproxy-ledger");
  writeFile(dir + "/ledger.sql", "INSERT INTO ledger(c) VALUES (:client_id);\n");
  const int clients = 8, perClient = connectPerTransaction ? 150 : 600;
  std::vector<std::string> args = {"pgbench",
                                   "-n",
                                   "-c",
                                   std::to_string(clients),
                                   "-j",
                                   "2",
                                   "-t",
                                   std::to_string(perClient),
                                   "-f",
                                   dir + "/ledger.sql",
                                   proxy.tls("host2")};  // positional: pgbench's -d is --debug
  if (connectPerTransaction) {
    args.insert(args.begin() + 1, "-C");
  }
  CommandResult bench;
  std::thread runner([&] { bench = run(args, seconds(600)); });
  for (int i = 0; i < 20; ++i) {
    std::this_thread::sleep_for(milliseconds(100));
    proxy.rewrite(i % 2 ? mappingTo("{P1}", "connect_timeout: 5s\n")
                        : mappingTo("{P1}", "connect_timeout: 4s\n"),
                  i % 2 ? 2 : 1);
    auto r = proxy.signal("reload");
    ASSERT_EQ(r.exit_code, 0) << r.output;
  }
  runner.join();
  int n = clients * perClient;
  EXPECT_EQ(bench.exit_code, 0) << bench.output;
  EXPECT_NE(bench.output.find("number of transactions actually processed: " + std::to_string(n) +
                              "/" + std::to_string(n)),
            std::string::npos)
      << bench.output;
  EXPECT_NE(bench.output.find("number of failed transactions: 0"), std::string::npos);
  EXPECT_EQ(bench.output.find("aborted"), std::string::npos) << bench.output;
  EXPECT_EQ(psql(direct(sandbox().port2), "select count(*) from ledger").output,
            std::to_string(n) + "\n");
  EXPECT_EQ(proxy.log().find("reload failed"), std::string::npos);
  run({"rm", "-rf", dir});
}

TEST(Reload, NothingLostWithConnectionPerTransaction) {
  ledgerUnderReloads(true);
}

TEST(Reload, NothingLostWithPersistentConnections) {
  ledgerUnderReloads(false);
}

TEST(Reload, OpenSessionKeepsItsBackendNewOnesFollowTheConfig) {
  // Plaintext through the only... here default mapping, so the route can move between clusters.
  auto config = [](const char* port) {
    return std::string(
               "max_draining_generations: 64\nmappings:\n"
               "  - {external: host1.example.com, internal: 127.0.0.1, port: ") +
           port + "}\n";
  };
  Proxy proxy(config("{P1}"), 1);
  PGconn* old = PQconnectdb(proxy.plain().c_str());
  ASSERT_EQ(PQstatus(old), CONNECTION_OK) << PQerrorMessage(old);
  EXPECT_EQ(clusterOf(old), "host1");
  for (int i = 0; i < 5; ++i) {
    proxy.rewrite(config(i % 2 ? "{P1}" : "{P2}"), 1);  // ends on {P2}
    ASSERT_EQ(proxy.signal("reload").exit_code, 0);
    std::string expected = i % 2 ? "host1" : "host2";
    EXPECT_TRUE(eventually([&] {
      return psql(proxy.plain(), "show cluster_name").output == expected + "\n";
    })) << "reload "
        << i << " did not take effect";
    EXPECT_EQ(clusterOf(old), "host1") << "after reload " << i;
  }
  PQfinish(old);
}

TEST(Reload, OldWorkersExitOnceDrained) {
  Proxy proxy(mappingTo("{P1}"), 2);
  for (int i = 0; i < 3; ++i) {
    ASSERT_EQ(proxy.signal("reload").exit_code, 0);
  }
  EXPECT_TRUE(eventually([&] { return childrenOf(proxy.pid()).size() == 2; }))
      << childrenOf(proxy.pid()).size() << " processes";
  proxy.rewrite(mappingTo("{P1}"), 3);  // changing workers on reload
  ASSERT_EQ(proxy.signal("reload").exit_code, 0);
  EXPECT_TRUE(eventually([&] { return childrenOf(proxy.pid()).size() == 3; }));
  EXPECT_EQ(psql(proxy.tls("host1"), "show cluster_name").output, "host1\n");
}

TEST(Reload, ShutdownTimeoutClosesLingeringSession) {
  Proxy proxy(mappingTo("{P1}", "shutdown_timeout: 1s\n"), 1);
  PGconn* conn = PQconnectdb(proxy.tls("host1").c_str());
  ASSERT_EQ(PQstatus(conn), CONNECTION_OK);
  ASSERT_EQ(proxy.signal("reload").exit_code, 0);
  EXPECT_TRUE(eventually([&] { return childrenOf(proxy.pid()).size() == 1; }))
      << "the draining worker did not exit after shutdown_timeout";
  EXPECT_EQ(clusterOf(conn), "");  // the session was closed
  EXPECT_NE(PQstatus(conn), CONNECTION_OK);
  PQfinish(conn);
  EXPECT_NE(proxy.log().find("shutdown_timeout reached: closing 1 remaining session(s)"),
            std::string::npos);
}

TEST(Reload, InvalidConfigKeepsServing) {
  Proxy proxy(mappingTo("{P1}"), 1);
  int failures = 0;
  for (const std::string& bad : {std::string("mappings: [\n"), std::string("mapings: []\n"),
                                 mappingTo("{P1}", "listen: {address: 127.0.0.1, port: 1}\n")}) {
    proxy.rewrite(bad, 1);
    // A reload the master gets anyway (kill -HUP, systemctl reload) must not hurt it.
    ASSERT_EQ(kill(proxy.pid(), SIGHUP), 0);
    ++failures;
    EXPECT_TRUE(eventually([&] {
      return proxy.log().find("reload failed (" + std::to_string(failures) + " so far)") !=
             std::string::npos;
    }));
    EXPECT_EQ(psql(proxy.tls("host1"), "show cluster_name").output, "host1\n");
  }
  std::string log = proxy.log();
  EXPECT_TRUE(
      std::regex_search(log, std::regex(proxy.configPath() + ":[0-9]+:[0-9]+: YAML syntax")))
      << log;
  EXPECT_NE(log.find("did you mean \"mappings\""), std::string::npos);
  // `pgproxy -s reload` checks the file first and says why it will not reload.
  proxy.rewrite("mapings: []\n", 1);
  auto r = proxy.signal("reload");
  EXPECT_EQ(r.exit_code, 1);
  EXPECT_NE(r.output.find("did you mean \"mappings\""), std::string::npos) << r.output;
  EXPECT_NE(r.output.find("not reloading"), std::string::npos) << r.output;
  // A valid file then reloads normally.
  proxy.rewrite(mappingTo("{P2}"), 1);
  ASSERT_EQ(proxy.signal("reload").exit_code, 0);
  EXPECT_TRUE(eventually([&] {
    return psql(proxy.tls("host1", "require"), "show cluster_name").output == "host2\n";
  }));
}

// Every worker holds one of 128 worker slots; draining generations keep theirs until they exit.
// A reload that cannot fit is refused and logged (before, its workers shared one fallback slot in
// silence and pgproxy_connections_active drifted). Stopped workers stand in for workers whose
// long sessions keep them draining.
TEST(Reload, RefusedWhileDrainingGenerationsHoldTheWorkerSlots) {
  int admin = freePort();
  Proxy proxy("admin: {listen: \"127.0.0.1:" + std::to_string(admin) + "\"}\n" + mappingTo("{P1}"),
              40);
  std::vector<pid_t> held;
  struct Resume {
    std::vector<pid_t>& pids;
    ~Resume() {
      for (pid_t p : pids) {
        kill(p, SIGCONT);
      }
    }
  } resume{held};
  auto holdAll = [&] {
    for (pid_t p : childrenOf(proxy.pid())) {
      if (std::find(held.begin(), held.end(), p) == held.end()) {
        ASSERT_EQ(kill(p, SIGSTOP), 0);
        held.push_back(p);
      }
    }
  };
  for (int gen = 1; gen <= 3; ++gen) {
    std::string marker = "generation " + std::to_string(gen) + " is serving";
    ASSERT_TRUE(eventually([&] { return proxy.log().find(marker) != std::string::npos; }))
        << marker;
    if (gen < 3) {
      holdAll();  // generation 3 serves; the two before it "drain"
      ASSERT_EQ(proxy.signal("reload").exit_code, 0);
    }
  }
  ASSERT_EQ(held.size(), 80u);
  ASSERT_TRUE(eventually([&] { return childrenOf(proxy.pid()).size() == 120u; }));
  ASSERT_EQ(proxy.signal("reload").exit_code, 0);
  ASSERT_TRUE(eventually([&] {
    return proxy.log().find("reload failed (1 so far)") != std::string::npos;
  })) << proxy.log();
  std::string log = proxy.log();
  EXPECT_NE(log.find("the new generation cannot start: not enough worker slots: 40 needed, 8 of "
                     "128 free"),
            std::string::npos)
      << log;
  EXPECT_EQ(log.find("generation 4"), std::string::npos);
  EXPECT_EQ(childrenOf(proxy.pid()).size(), 120u);
  EXPECT_EQ(psql(proxy.tls("host1"), "show cluster_name").output, "host1\n");
  std::string m = httpGet(admin, "/metrics").body;
  EXPECT_NE(m.find("\npgproxy_workers 40\n"), std::string::npos) << m;
  EXPECT_NE(m.find("\npgproxy_draining_workers 80\n"), std::string::npos) << m;

  // Once the old generations have drained, the same reload goes through.
  for (pid_t p : held) {
    kill(p, SIGCONT);
  }
  held.clear();
  EXPECT_TRUE(eventually([&] { return childrenOf(proxy.pid()).size() == 40u; }));
  ASSERT_EQ(proxy.signal("reload").exit_code, 0);
  EXPECT_TRUE(
      eventually([&] { return proxy.log().find("generation 4 is serving") != std::string::npos; }));
  EXPECT_TRUE(eventually([&] { return childrenOf(proxy.pid()).size() == 40u; }));
  EXPECT_NE(httpGet(admin, "/metrics").body.find("\npgproxy_connections_active 0\n"),
            std::string::npos);

  // More workers than a reload can fit beside the serving generation: -t and reload refuse it.
  proxy.rewrite(mappingTo("{P1}"), 65);
  auto t = run({proxyBinary(), "-t", "-c", proxy.configPath()});
  EXPECT_EQ(t.exit_code, 1);
  EXPECT_NE(t.output.find("workers must be \"auto\" or a number from 1 to 64"), std::string::npos)
      << t.output;
  EXPECT_EQ(proxy.signal("reload").exit_code, 1);
}

TEST(Lifecycle, QuitLetsOpenSessionFinish) {
  Proxy proxy(mappingTo("{P1}"), 2);
  PGconn* conn = PQconnectdb(proxy.tls("host1").c_str());
  ASSERT_EQ(PQstatus(conn), CONNECTION_OK);
  ASSERT_EQ(proxy.signal("quit").exit_code, 0);
  EXPECT_TRUE(eventually([&] { return psql(proxy.tls("host2"), "select 1").exit_code != 0; }))
      << "new connections are still accepted after quit";
  EXPECT_EQ(clusterOf(conn), "host1");           // the open session still works
  ASSERT_EQ(proxy.signal("quit").exit_code, 0);  // a second quit is harmless
  EXPECT_EQ(clusterOf(conn), "host1");
  EXPECT_TRUE(alive(proxy.pid()));
  PQfinish(conn);
  int status = proxy.waitExit(seconds(20));
  ASSERT_NE(status, -1) << "master did not exit after its last session closed";
  EXPECT_TRUE(WIFEXITED(status) && WEXITSTATUS(status) == 0);
  struct stat st;
  EXPECT_NE(stat(proxy.pidFile().c_str(), &st), 0);
}

TEST(Lifecycle, ReopenStartsANewLogFile) {
  Proxy proxy(mappingTo("{P1}", "debug: true\nlog_file: {DIR}/proxy.log\n"), 1);
  std::string logPath = proxy.configPath().substr(0, proxy.configPath().rfind('/')) + "/proxy.log";
  EXPECT_EQ(psql(proxy.tls("host1"), "select 1").exit_code, 0);
  ASSERT_EQ(rename(logPath.c_str(), (logPath + ".1").c_str()), 0);
  ASSERT_EQ(proxy.signal("reopen").exit_code, 0);
  EXPECT_TRUE(eventually(
      [&] { return readFile(logPath).find("log files reopened") != std::string::npos; }));
  EXPECT_EQ(psql(proxy.tls("host2"), "select 1").exit_code, 0);
  // The worker's lines about the new session land in the new file, not the moved one.
  EXPECT_TRUE(eventually([&] {
    return readFile(logPath).find("host2.example.com") != std::string::npos;
  })) << readFile(logPath);
  EXPECT_EQ(readFile(logPath + ".1").find("host2.example.com"), std::string::npos);
}

TEST(Lifecycle, ReopenReachesTheHealthChecker) {
  // With debug on, the health checker logs every failed check of a backend that is down.
  Proxy proxy(
      "debug: true\nlog_file: {DIR}/proxy.log\nmappings:\n  - external: db.example.com\n"
      "    health_check: {interval: 100ms, timeout: 100ms, fall: 1, rise: 1}\n"
      "    backends:\n      - {host: 127.0.0.1, port: {DEAD}}\n",
      1);
  std::string logPath = proxy.configPath().substr(0, proxy.configPath().rfind('/')) + "/proxy.log";
  const std::string checked = "] debug: health check of 127.0.0.1:";
  ASSERT_TRUE(eventually([&] { return readFile(logPath).find(checked) != std::string::npos; }))
      << readFile(logPath);
  ASSERT_EQ(rename(logPath.c_str(), (logPath + ".1").c_str()), 0);
  ASSERT_EQ(proxy.signal("reopen").exit_code, 0);
  EXPECT_TRUE(eventually([&] {
    std::string now = readFile(logPath);
    return now.find("[health ") != std::string::npos && now.find(checked) != std::string::npos;
  })) << "the health checker still writes to the rotated file:\n"
      << readFile(logPath);
}

// A signal that reaches a child before its handlers are installed kills it by the default action
// (SIGUSR1: terminate). Reloads fork children while the master forwards a storm of reopens.
TEST(Lifecycle, ReopenStormDuringReloadsKillsNoChild) {
  Proxy proxy(
      "mappings:\n  - external: db.example.com\n"
      "    health_check: {interval: 1s, timeout: 1s}\n"
      "    backends:\n      - {host: 127.0.0.1, port: {P1}}\n",
      2);
  ASSERT_TRUE(
      eventually([&] { return proxy.log().find("generation 1 is serving") != std::string::npos; }));
  std::atomic<bool> stop{false};
  std::thread storm([&] {
    while (!stop) {
      kill(proxy.pid(), SIGUSR1);
      std::this_thread::sleep_for(std::chrono::microseconds(200));
    }
  });
  for (int i = 0; i < 20; ++i) {
    ASSERT_EQ(kill(proxy.pid(), SIGHUP), 0);
    std::string marker = "generation " + std::to_string(i + 2) + " is serving";
    ASSERT_TRUE(eventually([&] { return proxy.log().find(marker) != std::string::npos; }))
        << marker;
  }
  stop = true;
  storm.join();
  // A quit right after a reload reaches workers that are still starting.
  ASSERT_EQ(kill(proxy.pid(), SIGHUP), 0);
  ASSERT_EQ(kill(proxy.pid(), SIGQUIT), 0);
  int status = proxy.waitExit(seconds(30));
  ASSERT_NE(status, -1);
  EXPECT_TRUE(WIFEXITED(status) && WEXITSTATUS(status) == 0);
  std::string log = proxy.log();
  EXPECT_NE(log.find("log files reopened"), std::string::npos);
  EXPECT_EQ(log.find("killed by signal"), std::string::npos) << log;
  EXPECT_EQ(log.find("starting a new one"), std::string::npos) << log;
}

// A client loop that counts failed connections while something happens to the proxy.
class ConnectLoop {
 public:
  explicit ConnectLoop(std::string conninfo) : conninfo_(std::move(conninfo)) {
    thread_ = std::thread([this] {
      while (!stop_) {
        PGconn* c = PQconnectdb(conninfo_.c_str());
        bool ok = PQstatus(c) == CONNECTION_OK && clusterOf(c) != "";
        if (!ok && std::string(PQerrorMessage(c)).find("refused") != std::string::npos) {
          ++refused_;
        }
        PQfinish(c);
        (ok ? ok_ : failed_)++;
      }
    });
  }
  // Returns the connections refused at TCP level; failed() counts every failure.
  int finish() {
    stop_ = true;
    thread_.join();
    return refused_;
  }
  int failed() const { return failed_; }
  int ok() const { return ok_; }

 private:
  std::string conninfo_;
  std::atomic<bool> stop_{false};
  std::atomic<int> ok_{0}, failed_{0}, refused_{0};
  std::thread thread_;
};

TEST(Lifecycle, KilledWorkerUnderConnectLoopRefusesNobody) {
  Proxy proxy(mappingTo("{P1}"), 2);
  ConnectLoop loop(proxy.tls("host1"));
  EXPECT_TRUE(eventually([&] { return loop.ok() > 20; }));
  auto workers = childrenOf(proxy.pid());
  ASSERT_EQ(workers.size(), 2u);
  kill(workers[0], SIGKILL);
  EXPECT_TRUE(eventually([&] {
    auto now = childrenOf(proxy.pid());
    return now.size() == 2 && std::find(now.begin(), now.end(), workers[0]) == now.end();
  }));
  int before = loop.ok();
  EXPECT_TRUE(eventually([&] { return loop.ok() > before + 20; }));
  EXPECT_EQ(loop.finish(), 0) << "connections refused while a worker was replaced";
  // Only a session the killed worker was holding can fail (the loop has one at a time).
  EXPECT_LE(loop.failed(), 1);
}

TEST(Lifecycle, TwoHundredReloadsLeakNothingInTheMaster) {
  // In sanitizer builds ASan's quarantine keeps freed memory resident on purpose; without it RSS
  // measures what the master really keeps (a no-op in normal builds).
  ScopedAsanOption noQuarantine("quarantine_size_mb=0");
  Proxy proxy(mappingTo("{P1}"), 1);
  auto reloadAndSettle = [&](int n) {
    for (int i = 0; i < n; ++i) {
      ASSERT_EQ(kill(proxy.pid(), SIGHUP), 0);
      std::string marker = "generation " + std::to_string(i + 2) + " is serving";
      ASSERT_TRUE(eventually([&] { return proxy.log().find(marker) != std::string::npos; }))
          << marker;
      ASSERT_TRUE(eventually([&] { return childrenOf(proxy.pid()).size() == 1; }));
    }
  };
  reloadAndSettle(10);  // warm up allocator pools
  int fds = fdCount(proxy.pid());
  long rss = rssKib(proxy.pid());
  std::string before = proxy.log();
  for (int i = 0; i < 200; ++i) {
    ASSERT_EQ(kill(proxy.pid(), SIGHUP), 0);
    std::string marker = "generation " + std::to_string(i + 12) + " is serving";
    ASSERT_TRUE(eventually([&] { return proxy.log().find(marker) != std::string::npos; }))
        << marker;
  }
  ASSERT_TRUE(eventually([&] { return childrenOf(proxy.pid()).size() == 1; }));
  EXPECT_EQ(fdCount(proxy.pid()), fds);
  EXPECT_LE(rssKib(proxy.pid()), rss + 256) << "master RSS grew from " << rss << " KiB";
  EXPECT_EQ(psql(proxy.tls("host1"), "show cluster_name").output, "host1\n");
}

// Binary upgrade runs a copy of the binary that the test can replace.
std::string copyBinary(const std::string& dir) {
  std::string path = dir + "/pgproxy";
  EXPECT_EQ(run({"cp", proxyBinary(), path}).exit_code, 0);
  return path;
}

TEST(Upgrade, NewBinaryTakesOverUnderLoad) {
  std::string dir = tempDir("pgproxy-upgrade");
  std::string bin = copyBinary(dir);
  Proxy proxy(mappingTo("{P1}"), 2, bin);
  pid_t oldMaster = proxy.pid();
  makeLedger();
  writeFile(dir + "/ledger.sql", "INSERT INTO ledger(c) VALUES (:client_id);\n");
  CommandResult bench;
  std::thread runner([&] {
    bench = run({"pgbench", "-n", "-C", "-c", "8", "-j", "2", "-t", "150", "-f",
                 dir + "/ledger.sql", proxy.tls("host2")},
                seconds(600));
  });
  std::this_thread::sleep_for(milliseconds(300));
  ASSERT_EQ(proxy.signal("upgrade").exit_code, 0);
  EXPECT_TRUE(eventually([&] {
    pid_t now = proxy.pidFromFile();
    return now > 0 && now != oldMaster;
  }));
  pid_t newMaster = proxy.pidFromFile();
  EXPECT_NE(proxy.waitExit(seconds(30)), -1) << "the old master did not exit";
  runner.join();
  EXPECT_EQ(bench.exit_code, 0) << bench.output;
  EXPECT_NE(bench.output.find("number of failed transactions: 0"), std::string::npos);
  EXPECT_EQ(bench.output.find("aborted"), std::string::npos) << bench.output;
  EXPECT_EQ(psql(direct(sandbox().port2), "select count(*) from ledger").output, "1200\n");
  // Exactly one master, serving.
  EXPECT_TRUE(alive(newMaster));
  EXPECT_FALSE(alive(oldMaster));
  EXPECT_EQ(childrenOf(newMaster).size(), 2u);
  EXPECT_EQ(psql(proxy.tls("host1"), "show cluster_name").output, "host1\n");
  kill(newMaster, SIGTERM);
  EXPECT_TRUE(eventually([&] { return !alive(newMaster); }));
  run({"rm", "-rf", dir});
}

// The new master adopts the old one's shared memory: a session the old master still drains
// counts against max_connections, can be cancelled through the new workers, and counters go on.
TEST(Upgrade, DrainingSessionsStillCountAndCancelAndCountersGoOn) {
  std::string dir = tempDir("pgproxy-upgrade");
  std::string bin = copyBinary(dir);
  int admin = freePort();
  Proxy proxy("admin: {listen: \"127.0.0.1:" + std::to_string(admin) +
                  "\"}\nmax_connections: 1\nmappings:\n"
                  "  - {external: host1.example.com, internal: 127.0.0.1, port: {P1}}\n",
              2, bin);
  PGconn* held = PQconnectdb(proxy.plain().c_str());  // plaintext: cancelled by its key
  ASSERT_EQ(PQstatus(held), CONNECTION_OK) << PQerrorMessage(held);
  auto refusedWith = [&] {
    int fd = connectTcp(proxy.port());
    std::string startup = startupPacket({{"user", "postgres"}, {"database", "postgres"}});
    EXPECT_EQ(write(fd, startup.data(), startup.size()), static_cast<ssize_t>(startup.size()));
    bool closed = false;
    std::string state = sqlstateOf(readUntilClose(fd, seconds(10), &closed));
    close(fd);
    return state;
  };
  ASSERT_EQ(refusedWith(), "53300");
  long long accepted =
      metricValue(httpGet(admin, "/metrics").body, "pgproxy_connections_accepted_total");
  ASSERT_GE(accepted, 2);

  pid_t oldMaster = proxy.pid();
  ASSERT_EQ(proxy.signal("upgrade").exit_code, 0);
  ASSERT_TRUE(eventually([&] {
    return proxy.log().find("telling the previous master (pid " + std::to_string(oldMaster) +
                            ") to drain") != std::string::npos;
  })) << proxy.log();
  pid_t newMaster = proxy.pidFromFile();
  ASSERT_NE(newMaster, oldMaster);
  EXPECT_NE(proxy.log().find("upgrade: sharing the previous master's counters"), std::string::npos);
  // The old master's workers stopped listening: what answers now is the new generation.
  ASSERT_TRUE(eventually([&] {
    auto kids = childrenOf(oldMaster);  // the new master is one of them
    return kids.size() == 2 && std::find(kids.begin(), kids.end(), newMaster) != kids.end();
  }));
  EXPECT_TRUE(alive(oldMaster));

  // The held session still fills max_connections.
  EXPECT_EQ(refusedWith(), "53300");
  std::string m = httpGet(admin, "/metrics").body;
  EXPECT_GE(metricValue(m, "pgproxy_connections_accepted_total"), accepted + 1) << m;
  EXPECT_EQ(metricValue(m, "pgproxy_connections_active"), 1) << m;
  EXPECT_EQ(metricValue(m, "pgproxy_workers"), 2) << m;
  // The previous master's workers are found in the shared tables (looked at every second).
  EXPECT_TRUE(eventually([&] {
    return metricValue(httpGet(admin, "/metrics").body, "pgproxy_draining_workers") == 1;
  })) << httpGet(admin, "/metrics").body;

  // Ctrl-C on the old session: the CancelRequest reaches a new worker, which finds the key.
  ASSERT_EQ(PQsendQuery(held, "select pg_sleep(30)"), 1);
  PGconn* watcher = PQconnectdb(direct(sandbox().port1).c_str());
  EXPECT_TRUE(eventually([&] {
    PGresult* r = PQexec(watcher,
                         "select count(*) from pg_stat_activity where query = 'select "
                         "pg_sleep(30)' and state = 'active'");
    bool running = PQntuples(r) == 1 && std::string(PQgetvalue(r, 0, 0)) != "0";
    PQclear(r);
    return running;
  }));
  PQfinish(watcher);
  PGcancel* cancel = PQgetCancel(held);
  char err[256];
  EXPECT_EQ(PQcancel(cancel, err, sizeof(err)), 1) << err;
  PQfreeCancel(cancel);
  PGresult* res = PQgetResult(held);
  ASSERT_NE(res, nullptr);
  const char* state = PQresultErrorField(res, PG_DIAG_SQLSTATE);
  EXPECT_STREQ(state ? state : "", "57014") << PQresultErrorMessage(res);
  PQclear(res);
  while ((res = PQgetResult(held)) != nullptr) {
    PQclear(res);
  }
  EXPECT_EQ(clusterOf(held), "host1");

  // Once it ends, the old master exits and its place is free.
  PQfinish(held);
  EXPECT_NE(proxy.waitExit(seconds(30)), -1) << "the old master did not exit";
  EXPECT_TRUE(eventually([&] { return psql(proxy.plain(), "select 7").output == "7\n"; }));
  EXPECT_TRUE(eventually([&] {
    return metricValue(httpGet(admin, "/metrics").body, "pgproxy_draining_workers") == 0;
  }));
  m = httpGet(admin, "/metrics").body;
  EXPECT_EQ(metricValue(m, "pgproxy_connections_active"), 0) << m;
  EXPECT_GE(metricValue(m, "pgproxy_connections_accepted_total"), accepted + 3) << m;
  kill(newMaster, SIGTERM);
  EXPECT_TRUE(eventually([&] { return !alive(newMaster); }));
  run({"rm", "-rf", dir});
}

TEST(Upgrade, FailingNewBinaryLeavesOldMasterServing) {
  std::string dir = tempDir("pgproxy-upgrade");
  std::string bin = copyBinary(dir);
  Proxy proxy(mappingTo("{P1}"), 1, bin);
  // Replace the binary with one that fails at once.
  writeFile(dir + "/broken", "#!/bin/sh\necho broken binary >&2\nexit 1\n");
  chmod((dir + "/broken").c_str(), 0755);
  ASSERT_EQ(rename((dir + "/broken").c_str(), bin.c_str()), 0);
  ASSERT_EQ(kill(proxy.pid(), SIGUSR2), 0);
  EXPECT_TRUE(eventually([&] { return proxy.log().find("upgrade failed") != std::string::npos; }));
  EXPECT_TRUE(eventually([&] { return proxy.pidFromFile() == proxy.pid(); }))
      << "pid file not restored";
  EXPECT_TRUE(alive(proxy.pid()));
  EXPECT_EQ(psql(proxy.tls("host1"), "show cluster_name").output, "host1\n");
  run({"rm", "-rf", dir});
}

}  // namespace
}  // namespace pgproxy::it

namespace pgproxy::it {
namespace {

// systemd's side of sd_notify: a datagram socket the test reads, as the service manager would.
class NotifySocket {
 public:
  NotifySocket() {
    path_ = tempDir("pgproxy-notify") + "/notify.sock";
    fd_ = socket(AF_UNIX, SOCK_DGRAM | SOCK_CLOEXEC, 0);
    sockaddr_un addr{};
    addr.sun_family = AF_UNIX;
    std::strncpy(addr.sun_path, path_.c_str(), sizeof(addr.sun_path) - 1);
    EXPECT_EQ(bind(fd_, reinterpret_cast<sockaddr*>(&addr), sizeof(addr)), 0);
    setenv("NOTIFY_SOCKET", path_.c_str(), 1);
  }
  ~NotifySocket() {
    unsetenv("NOTIFY_SOCKET");
    close(fd_);
    run({"rm", "-rf", path_.substr(0, path_.rfind('/'))});
  }
  // Everything received so far, messages separated by "|".
  std::string drain() {
    char buf[4096];
    ssize_t n;
    while ((n = recv(fd_, buf, sizeof(buf), MSG_DONTWAIT)) > 0) {
      received_ += std::string(buf, static_cast<std::size_t>(n)) + "|";
    }
    return received_;
  }

 private:
  std::string path_;
  int fd_ = -1;
  std::string received_;
};

std::vector<pid_t> sorted(std::vector<pid_t> v) {
  std::sort(v.begin(), v.end());
  return v;
}

// A new worker that exits before its ready byte (EOF on the pipe) is not ready: the reload fails
// and the generation that serves goes on serving. PGPROXY_TEST_WORKER_START_FAIL makes new workers
// exit before they are ready while its file exists.
TEST(Reload, NewWorkersThatCannotStartLeaveTheOldGenerationServing) {
  NotifySocket notify;
  std::string dir = tempDir("pgproxy-failstart");
  std::string flag = dir + "/fail";
  setenv("PGPROXY_TEST_WORKER_START_FAIL", flag.c_str(), 1);
  Proxy proxy(mappingTo("{P1}"), 2);
  unsetenv("PGPROXY_TEST_WORKER_START_FAIL");
  ASSERT_TRUE(eventually([&] { return notify.drain().find("READY=1") != std::string::npos; }));
  auto workers = sorted(childrenOf(proxy.pid()));
  ASSERT_EQ(workers.size(), 2u);
  PGconn* held = PQconnectdb(proxy.tls("host1").c_str());
  ASSERT_EQ(PQstatus(held), CONNECTION_OK) << PQerrorMessage(held);

  writeFile(flag, "");
  proxy.rewrite(mappingTo("{P2}"), 2);  // would send host1's clients to host2 once it serves
  ASSERT_EQ(proxy.signal("reload").exit_code, 0);
  EXPECT_TRUE(eventually([&] {
    return proxy.log().find("reload failed (1 so far)") != std::string::npos;
  })) << proxy.log();
  std::string log = proxy.log();
  EXPECT_NE(log.find("of generation 2 exited with code 1 before it was ready"), std::string::npos)
      << log;
  EXPECT_EQ(log.find("generation 2 is serving"), std::string::npos) << log;
  EXPECT_TRUE(eventually([&] {
    std::string got = notify.drain();
    std::size_t reloading = got.find("RELOADING=1");
    return reloading != std::string::npos &&
           got.find("STATUS=reload failed", reloading) != std::string::npos;
  })) << notify.drain();
  // The same workers serve, with the old configuration; the open session goes on.
  EXPECT_TRUE(eventually([&] { return sorted(childrenOf(proxy.pid())) == workers; }));
  EXPECT_EQ(clusterOf(held), "host1");
  EXPECT_EQ(psql(proxy.tls("host1"), "show cluster_name").output, "host1\n");
  EXPECT_EQ(sorted(childrenOf(proxy.pid())), workers);

  // Once workers can start again, the same configuration reloads.
  ASSERT_EQ(unlink(flag.c_str()), 0);
  ASSERT_EQ(proxy.signal("reload").exit_code, 0);
  EXPECT_TRUE(eventually([&] {
    return proxy.log().find("generation 3 is serving") != std::string::npos;
  })) << proxy.log();
  EXPECT_TRUE(eventually([&] {
    return psql(proxy.tls("host1", "require"), "show cluster_name").output == "host2\n";
  }));
  EXPECT_EQ(clusterOf(held), "host1");
  PQfinish(held);
  run({"rm", "-rf", dir});
}

// The same for an upgrade: a new binary whose workers cannot start gives up, and the old master
// (same workers) serves on.
TEST(Upgrade, NewWorkersThatCannotStartLeaveTheOldMasterServing) {
  std::string dir = tempDir("pgproxy-upgrade");
  std::string bin = copyBinary(dir);
  std::string flag = dir + "/fail";
  setenv("PGPROXY_TEST_WORKER_START_FAIL", flag.c_str(), 1);
  Proxy proxy(mappingTo("{P1}"), 2, bin);
  unsetenv("PGPROXY_TEST_WORKER_START_FAIL");
  ASSERT_TRUE(
      eventually([&] { return proxy.log().find("generation 1 is serving") != std::string::npos; }));
  auto workers = sorted(childrenOf(proxy.pid()));
  writeFile(flag, "");
  ASSERT_EQ(proxy.signal("upgrade").exit_code, 0);
  EXPECT_TRUE(eventually([&] {
    return proxy.log().find("upgrade failed: the new binary exited with code 1") !=
           std::string::npos;
  })) << proxy.log();
  EXPECT_NE(proxy.log().find("before it was ready; exiting so that the previous master keeps "
                             "serving"),
            std::string::npos);
  EXPECT_TRUE(eventually([&] { return proxy.pidFromFile() == proxy.pid(); }));
  EXPECT_TRUE(eventually([&] { return sorted(childrenOf(proxy.pid())) == workers; }));
  EXPECT_EQ(psql(proxy.tls("host1"), "show cluster_name").output, "host1\n");
  run({"rm", "-rf", dir});
}

TEST(Systemd, NotifiesReadyReloadStopAndMainPidOnUpgrade) {
  NotifySocket notify;
  std::string dir = tempDir("pgproxy-upgrade");
  std::string bin = copyBinary(dir);
  Proxy proxy(mappingTo("{P1}"), 1, bin);
  EXPECT_TRUE(eventually([&] { return notify.drain().find("READY=1") != std::string::npos; }));
  ASSERT_EQ(proxy.signal("reload").exit_code, 0);
  EXPECT_TRUE(eventually([&] {
    std::string got = notify.drain();
    std::size_t reloading = got.find("RELOADING=1");
    return reloading != std::string::npos && got.find("READY=1", reloading) != std::string::npos;
  }));
  pid_t old = proxy.pid();
  ASSERT_EQ(proxy.signal("upgrade").exit_code, 0);
  EXPECT_TRUE(eventually([&] {
    pid_t now = proxy.pidFromFile();
    return now > 0 && now != old &&
           notify.drain().find("MAINPID=" + std::to_string(now)) != std::string::npos;
  })) << notify.drain();
  pid_t newMaster = proxy.pidFromFile();
  EXPECT_NE(proxy.waitExit(seconds(30)), -1);
  // The handover is not a stop: systemd must not see STOPPING from the old master.
  EXPECT_EQ(notify.drain().find("STOPPING=1"), std::string::npos) << notify.drain();
  kill(newMaster, SIGTERM);
  EXPECT_TRUE(eventually([&] { return notify.drain().find("STOPPING=1") != std::string::npos; }));
  EXPECT_TRUE(eventually([&] { return !alive(newMaster); }));
  run({"rm", "-rf", dir});
}

}  // namespace
}  // namespace pgproxy::it
