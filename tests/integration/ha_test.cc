// The HA recipe of docs/ha.md, on this machine: two pgproxy nodes, each in its own network
// namespace (standing in for two hosts), and a service address that keepalived would move
// between them. Clients connect to the service address while it moves from a node that failed
// to the other: connections fail only during the move, then are served.
#include <fcntl.h>
#include <gtest/gtest.h>
#include <libpq-fe.h>
#include <sched.h>
#include <signal.h>
#include <sys/wait.h>
#include <unistd.h>

#include <atomic>
#include <mutex>
#include <string>
#include <thread>
#include <vector>

#include "harness.h"

namespace pgproxy::it {
namespace {

using std::chrono::milliseconds;
using std::chrono::seconds;

// Two namespaces joined to this one by veth pairs: node a at 10.N.1.2 (this side 10.N.1.1),
// node b at 10.N.2.2 (10.N.2.1); the service address 10.N.0.10 is on the lo of the node that
// holds it, with this namespace's route pointing at that node, as a VRRP router's neighbours
// learn it from the new master's gratuitous ARP. N comes from the pid, so that two test runs on
// one machine do not collide.
struct TwoNodes {
  std::string tag, net;
  TwoNodes() {
    int n = 100 + getpid() % 100;
    tag = std::to_string(getpid() % 100000);
    net = "10." + std::to_string(n) + ".";
    for (char node : {'a', 'b'}) {
      std::string ns = name(node), here = "ha" + tag + node + "0", there = "ha" + tag + node + "1";
      std::string side = node == 'a' ? "1" : "2";
      ok({"ip", "netns", "add", ns});
      ok({"ip", "link", "add", here, "type", "veth", "peer", "name", there});
      ok({"ip", "link", "set", there, "netns", ns});
      ok({"ip", "addr", "add", net + side + ".1/24", "dev", here});
      ok({"ip", "link", "set", here, "up"});
      ok({"ip", "-n", ns, "addr", "add", net + side + ".2/24", "dev", there});
      ok({"ip", "-n", ns, "link", "set", there, "up"});
      ok({"ip", "-n", ns, "link", "set", "lo", "up"});
      ok({"ip", "-n", ns, "route", "add", "default", "via", net + side + ".1"});
    }
  }
  ~TwoNodes() {
    run({"ip", "route", "del", vip() + "/32"});
    for (char node : {'a', 'b'}) {
      run({"ip", "link", "del", "ha" + tag + node + "0"});  // takes its peer with it
      run({"ip", "netns", "del", name(node)});
    }
  }
  static void ok(const std::vector<std::string>& argv) {
    auto r = run(argv);
    ASSERT_EQ(r.exit_code, 0) << argv[0] << " " << argv[1] << " " << argv[2] << ": " << r.output;
  }
  std::string name(char node) const { return "pgha" + tag + node; }
  std::string addr(char node) const { return net + (node == 'a' ? "1" : "2") + ".2"; }
  std::string gateway(char node) const { return net + (node == 'a' ? "1" : "2") + ".1"; }
  std::string vip() const { return net + "0.10"; }
  // What keepalived does on the node that becomes master (and the old master, if it still can,
  // on leaving): the address on the new node, the neighbours' path to it.
  void moveVip(char from, char to) {
    run({"ip", "-n", name(from), "addr", "del", vip() + "/32", "dev", "lo"});
    ok({"ip", "-n", name(to), "addr", "add", vip() + "/32", "dev", "lo"});
    ok({"ip", "route", "replace", vip() + "/32", "via", addr(to)});
  }
};

// A pgproxy node: the binary started inside the node's namespace (setns, then exec).
struct Node {
  pid_t pid = -1;
  std::string dir, log;
  Node(const std::string& netns, const std::string& config) {
    dir = tempDir("pgproxy-ha-node");
    writeFile(dir + "/pgproxy.yaml", config);
    log = dir + "/pgproxy.log";
    pid = fork();
    if (pid == 0) {
      int fd = open(("/var/run/netns/" + netns).c_str(), O_RDONLY | O_CLOEXEC);
      if (fd < 0 || setns(fd, CLONE_NEWNET) != 0) {
        _exit(126);
      }
      int out = open(log.c_str(), O_WRONLY | O_CREAT | O_APPEND, 0644);
      dup2(out, 1);
      dup2(out, 2);
      std::string bin = proxyBinary();
      execl(bin.c_str(), bin.c_str(), "-c", (dir + "/pgproxy.yaml").c_str(),
            static_cast<char*>(nullptr));
      _exit(127);
    }
  }
  // The master and its workers, all at once: a node that failed.
  void crash() {
    if (pid < 0) {
      return;
    }
    for (pid_t child : childrenOf(pid)) {
      kill(child, SIGKILL);
    }
    kill(pid, SIGKILL);
    waitpid(pid, nullptr, 0);
    pid = -1;
  }
  ~Node() {
    if (pid > 0) {
      kill(pid, SIGTERM);
      waitpid(pid, nullptr, 0);
    }
    if (::testing::Test::HasFailure()) {
      std::cerr << "---- node log " << log << " ----\n" << readFile(log);
    }
    run({"rm", "-rf", dir});
  }
};

bool served(const std::string& conninfo) {
  PGconn* c = PQconnectdb(conninfo.c_str());
  bool ok = PQstatus(c) == CONNECTION_OK;
  if (ok) {
    PGresult* r = PQexec(c, "select 1");
    ok = PQresultStatus(r) == PGRES_TUPLES_OK;
    PQclear(r);
  }
  PQfinish(c);
  return ok;
}

TEST(Ha, TheServiceAddressMovesToTheOtherNodeAndClientsAreServedAgain) {
  TwoNodes net;
  if (::testing::Test::HasFatalFailure()) {
    return;
  }
  // The nodes reach PostgreSQL (which listens on 127.0.0.1 here) through a pgproxy on this
  // side's veth addresses: in production they would reach the database servers directly.
  Proxy relay("listen:\n  - {address: 127.0.0.1, port: {PORT}}\n  - {address: " + net.gateway('a') +
                  ", port: {PORT}}\n  - {address: " + net.gateway('b') +
                  ", port: {PORT}}\n"
                  "mappings:\n  - {external: db.example.com, internal: 127.0.0.1, port: {P1}}\n",
              1);
  auto nodeConfig = [&](char node) {
    return "listen: {address: 0.0.0.0, port: 5400}\nworkers: 2\ninstance_id: " +
           std::string(node == 'a' ? "1" : "2") + "\npeers: [{id: " + (node == 'a' ? "2" : "1") +
           ", address: \"" + net.addr(node == 'a' ? 'b' : 'a') +
           ":5400\"}]\n"
           "mappings:\n  - {external: db.example.com, internal: " +
           net.gateway(node) + ", port: " + std::to_string(relay.port()) + "}\n";
  };
  Node a(net.name('a'), nodeConfig('a'));
  Node b(net.name('b'), nodeConfig('b'));
  auto conninfo = [](const std::string& host) {
    return "host=" + host +
           " port=5400 sslmode=disable user=postgres dbname=postgres connect_timeout=2 "
           "gssencmode=disable";
  };
  ASSERT_TRUE(eventually([&] { return served(conninfo(net.addr('a'))); })) << readFile(a.log);
  ASSERT_TRUE(eventually([&] { return served(conninfo(net.addr('b'))); })) << readFile(b.log);
  net.moveVip('b', 'a');  // a is master
  ASSERT_TRUE(served(conninfo(net.vip())));

  // Clients connect to the service address over and over, one connection per query.
  std::atomic<bool> stop{false};
  std::mutex mu;
  std::vector<std::pair<std::chrono::steady_clock::time_point, bool>> tries;
  std::thread client([&] {
    while (!stop) {
      bool ok = served(conninfo(net.vip()));
      std::lock_guard<std::mutex> lock(mu);
      tries.emplace_back(std::chrono::steady_clock::now(), ok);
    }
  });
  auto successes = [&] {
    std::lock_guard<std::mutex> lock(mu);
    std::size_t n = 0;
    for (const auto& t : tries) {
      n += t.second ? 1 : 0;
    }
    return n;
  };
  ASSERT_TRUE(eventually([&] { return successes() >= 20; }));
  // Node a fails; keepalived on b stops hearing it and takes the address.
  auto failed_at = std::chrono::steady_clock::now();  // from its first killed process on
  a.crash();
  net.moveVip('a', 'b');
  auto moved_at = std::chrono::steady_clock::now();
  std::size_t before_move = successes();
  EXPECT_TRUE(eventually([&] { return successes() >= before_move + 20; }));
  stop = true;
  client.join();

  // Failures only between the crash and the move; after the first success on b, none.
  std::size_t failures = 0, late_failures = 0;
  bool served_after = false;
  for (const auto& [at, ok] : tries) {
    if (at > moved_at && ok) {
      served_after = true;
    }
    if (!ok) {
      ++failures;
      if (served_after) {
        ++late_failures;
      }
      EXPECT_GE(at, failed_at) << "a connection failed "
                               << std::chrono::duration_cast<milliseconds>(failed_at - at).count()
                               << " ms before node a did";
    }
  }
  EXPECT_TRUE(served_after);
  RecordProperty("connections_failed_during_the_move", static_cast<int>(failures));
  RecordProperty("connections_tried", static_cast<int>(tries.size()));
  EXPECT_EQ(late_failures, 0u) << failures << " failures in all";

  // pgbench, one connection per transaction, through the moved address: all served.
  std::string script = b.dir + "/select.sql";
  writeFile(script, "select 1;\n");
  auto r = run({"pgbench", "-n", "-C", "-c", "4", "-T", "3", "-f", script, conninfo(net.vip())},
               seconds(60));
  EXPECT_EQ(r.exit_code, 0) << r.output;
  EXPECT_NE(r.output.find("number of failed transactions: 0"), std::string::npos) << r.output;
}

}  // namespace
}  // namespace pgproxy::it
