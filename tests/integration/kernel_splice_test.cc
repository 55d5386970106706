// splice: kernel: TLS passthrough sessions whose bytes the kernel moves between the sockets (a BPF
// sockmap, net/kernel_splice.h). These tests need the program to load (root, or CAP_BPF,
// CAP_NET_ADMIN and CAP_PERFMON): `splice: kernel` makes pgproxy refuse to start otherwise, so
// they fail rather than pass in user mode. The rest of the passthrough suites run in both modes
// (scripts/test.sh runs them again with PGPROXY_TEST_SPLICE=user).
#include <linux/tcp.h>
#include <netinet/in.h>
#include <poll.h>
#include <signal.h>
#include <sys/socket.h>

#include <memory>
#include <regex>

#include "harness.h"

namespace pgproxy::it {
namespace {

const char* kMappings = R"(splice: kernel
default: host1.example.com
mappings:
  - {external: host1.example.com, internal: 127.0.0.1, port: {P1}}
)";

std::string adminBlock(int port) {
  return "admin: {listen: \"127.0.0.1:" + std::to_string(port) + "\"}\n";
}

// The access lines of sessions spliced in the kernel.
std::vector<std::string> kernelLines(const Proxy& proxy) {
  std::vector<std::string> out;
  std::string log = proxy.log();
  std::size_t pos = 0;
  while ((pos = log.find("access ", pos)) != std::string::npos) {
    std::size_t end = log.find('\n', pos);
    std::string line = log.substr(pos, end - pos);
    if (line.find(" splice=kernel") != std::string::npos) {
      out.push_back(line);
    }
    pos = end;
  }
  return out;
}

std::uint64_t field(const std::string& line, const std::string& name) {
  std::smatch m;
  std::regex re(" " + name + "=([0-9]+)");
  return std::regex_search(line, m, re) ? std::stoull(m[1]) : 0;
}

// One TCP_INFO number of the socket PostgreSQL (host1) holds towards local port `peer_port`, read
// with ss: "bytes_acked:N".
long long serverSocketStat(int peer_port, const std::string& stat, std::string* raw) {
  auto r = run({"ss", "-tinmH", "state", "established",
                "( sport = :" + std::to_string(sandbox().port1) +
                    " and dport = :" + std::to_string(peer_port) + " )"});
  if (raw) {
    *raw = r.output;
  }
  std::smatch m;
  std::regex re(stat + ":([0-9]+)");
  return std::regex_search(r.output, m, re) ? std::stoll(m[1]) : -1;
}

TEST(KernelSplice, PassthroughSessionsSpliceInTheKernelAndCountTheirBytes) {
  int admin = freePort();
  Proxy proxy(adminBlock(admin) + kMappings, 1);
  EXPECT_TRUE(eventually([&] {
    return proxy.log().find("in-kernel splice loaded") != std::string::npos;
  })) << proxy.log();
  // ~2 MB down through the kernel: the access line counts it although pgproxy never saw it.
  auto r = psql(proxy.tls("host1"),
                "select sum(length(repeat('x', 1000))) from "
                "(select repeat('y', 1000) from generate_series(1, 2000)) s;"
                "select string_agg(md5(i::text), '') from "
                "generate_series(1, 60000) i");
  ASSERT_EQ(r.exit_code, 0) << r.output;
  ASSERT_TRUE(eventually([&] { return kernelLines(proxy).size() == 1; })) << proxy.log();
  std::string line = kernelLines(proxy)[0];
  EXPECT_GT(field(line, "bytes_down"), 60000u * 32) << line;
  EXPECT_GT(field(line, "bytes_up"), 100u) << line;
  // A normal end: psql may reset after its close_notify, which pgproxy no longer sees in kernel
  // mode (user mode reads the record and says ok), so client_closed is normal here too.
  EXPECT_TRUE(line.find("outcome=ok ") != std::string::npos ||
              line.find("outcome=client_closed ") != std::string::npos)
      << line;
  EXPECT_EQ(scrapeMetric(admin, "pgproxy_kernel_splices_total"), 1);
  EXPECT_GT(
      scrapeMetric(admin, "pgproxy_backend_to_client_bytes_total{mapping=\"host1.example.com\"}"),
      60000 * 32);
  // A plaintext session of the same mapping stays in user space (pgproxy reads its cancel key).
  r = psql(proxy.plain(), "select 1");
  ASSERT_EQ(r.exit_code, 0) << r.output;
  EXPECT_TRUE(eventually([&] { return proxy.log().find("mode=plaintext") != std::string::npos; }));
  EXPECT_EQ(kernelLines(proxy).size(), 1u);
  // Cancel routing is unchanged: keyed at login, before the kernel takes the session.
  expectCancelWorks(proxy.tls("host1"));
}

// The reader stalls every few MB, so the kernel pauses the direction and hands it back many
// times over: each hand-off is where a byte could be lost or overtaken (a socket taken out of the
// sockmap while a segment was being received lost that segment: TLS said "bad record mac").
TEST(KernelSplice, GigabyteCopyIsByteIdenticalBothWays) {
  int admin = freePort();
  Proxy proxy(adminBlock(admin) + kMappings, 1);
  // ~1 GB down: 2M rows of 512 hex characters, hashed as they arrive, through pgproxy and
  // directly.
  const std::string query =
      "select i, repeat(md5(i::text), 16) from generate_series(1, 2000000) i order by i";
  const std::string slowMd5 =
      "python3 -c 'import hashlib, sys, time\n"
      "h = hashlib.md5(); n = 0; stall = 16 << 20\n"
      "while True:\n"
      "    b = sys.stdin.buffer.read(65536)\n"
      "    if not b: break\n"
      "    h.update(b); n += len(b)\n"
      "    if n >= stall: time.sleep(0.15); stall += 16 << 20\n"
      "print(h.hexdigest())'";
  auto md5Of = [&](const std::string& conninfo) {
    return run({"bash", "-c",
                "set -o pipefail; psql -X -q -d '" + conninfo + "' -c \"\\copy (" + query +
                    ") to stdout\" | " + slowMd5},
               std::chrono::seconds(600));
  };
  auto via = md5Of(proxy.tls("host1"));
  auto dir = md5Of(direct(sandbox().port1));
  ASSERT_EQ(via.exit_code, 0) << via.output;
  ASSERT_EQ(dir.exit_code, 0) << dir.output;
  EXPECT_EQ(via.output, dir.output);
  // The stalls made the kernel hand the direction to pgproxy (which gives it back once the
  // reader has caught up).
  long long down = scrapeMetric(admin, "pgproxy_kernel_splice_fallbacks_total");
  EXPECT_GE(down, 1);
  // ~256 MB up through pgproxy, checked row by row by sums PostgreSQL computes on both sides.
  ASSERT_EQ(psql(direct(sandbox().port1),
                 "drop table if exists kernel_copy_up; "
                 "create table kernel_copy_up (i int, s text)")
                .exit_code,
            0);
  const std::string up = "select i, repeat(md5(i::text), 16) s from generate_series(1, 500000) i";
  auto load = run({"bash", "-c",
                   "set -o pipefail; psql -X -q -d '" + direct(sandbox().port1) +
                       "' -c \"\\copy (" + up + ") to stdout\" | psql -X -q -d '" +
                       proxy.tls("host1") + "' -c '\\copy kernel_copy_up from stdin'"},
                  std::chrono::seconds(600));
  ASSERT_EQ(load.exit_code, 0) << load.output;
  EXPECT_EQ(queryHost1("select count(*), sum(i), sum(hashtext(s)::bigint) from kernel_copy_up"),
            queryHost1("select count(*), sum(i), sum(hashtext(s)::bigint) from (" + up + ") q"));
  queryHost1("drop table kernel_copy_up");
  EXPECT_TRUE(eventually([&] { return kernelLines(proxy).size() == 2; })) << proxy.log();
  long long handedUp = scrapeMetric(admin, "pgproxy_kernel_splice_fallbacks_total") - down;
  std::cout << "the kernel handed a direction to pgproxy " << down << " time(s) down, " << handedUp
            << " up\n";
  // Every byte the sockets took was forwarded (Session::checkKernelDelivery).
  EXPECT_EQ(proxy.log().find("the kernel lost"), std::string::npos) << proxy.log();
  EXPECT_EQ(scrapeMetric(admin, "pgproxy_kernel_splice_lost_bytes_total"), 0);
}

TEST(KernelSplice, ASlowReaderKeepsTheKernelsQueueBounded) {
  int admin = freePort();
  Proxy proxy(adminBlock(admin) + kMappings, 1);
  PGconn* c = PQconnectdb(proxy.tls("host1").c_str());
  ASSERT_EQ(PQstatus(c), CONNECTION_OK) << PQerrorMessage(c);
  // ~2 GB of results the client never reads. The kernel's redirect has no backpressure of its
  // own: without pgproxy's bound it would take all of it while PostgreSQL kept writing. With it,
  // PostgreSQL ends up waiting to write (ClientWrite), several samples in a row.
  ASSERT_EQ(PQsendQuery(c, "select repeat('x', 1000) from generate_series(1, 2000000)"), 1);
  int blocked = 0;
  std::string port;
  ASSERT_TRUE(eventually(
      [&] {
        port = queryHost1(
            "select client_port from pg_stat_activity where wait_event = 'ClientWrite' "
            "and query like 'select repeat(%'");
        blocked = port.empty() ? 0 : blocked + 1;
        return blocked >= 5;
      },
      std::chrono::seconds(60)))
      << "PostgreSQL never waited for the client";
  // What PostgreSQL's socket has delivered, less what the client's socket has received, is what
  // sits between them: pgproxy's sockets and the kernel's queue. Bounded by the socket buffers
  // and kernel_splice::kQueueLimit, not by the 2 GB result.
  std::string ss;
  long long sent = serverSocketStat(std::stoi(port), "bytes_acked", &ss);
  tcp_info info{};
  socklen_t len = sizeof(info);
  ASSERT_EQ(getsockopt(PQsocket(c), IPPROTO_TCP, TCP_INFO, &info, &len), 0);
  long long received = static_cast<long long>(info.tcpi_bytes_received);
  ASSERT_GT(sent, 0) << ss;
  std::cout << "PostgreSQL sent " << sent << " bytes, the client's socket holds " << received
            << "; between them " << (sent - received) / 1024 << " KiB\n"
            << "ss -tmi of pgproxy's sockets:\n"
            << run({"ss", "-tmiH", "state", "established",
                    "( sport = :" + std::to_string(proxy.port()) +
                        " or dport = :" + std::to_string(sandbox().port1) + " )"})
                   .output;
  EXPECT_LT(sent - received, 48ll << 20) << ss;
  EXPECT_GE(scrapeMetric(admin, "pgproxy_kernel_splice_fallbacks_total"), 1);
  PQfinish(c);  // the session ends: pgproxy's relay and the kernel's queue let go
  EXPECT_TRUE(eventually([&] { return kernelLines(proxy).size() == 1; })) << proxy.log();
}

TEST(KernelSplice, IdleTimeoutClosesAnIdleKernelSplicedSessionOnly) {
  Proxy proxy(std::string("idle_timeout: 1s\n") + kMappings, 1);
  Conn busy(proxy.tls("host1"));
  // Traffic the worker never sees still counts: a session busy for three idle_timeouts lives.
  auto until = std::chrono::steady_clock::now() + std::chrono::milliseconds(3000);
  int queries = 0;
  while (std::chrono::steady_clock::now() < until) {
    ASSERT_EQ(busy.one("select 1"), "1") << "query " << queries;
    ++queries;
    std::this_thread::sleep_for(std::chrono::milliseconds(200));
  }
  // Then it idles, and goes.
  ASSERT_TRUE(eventually([&] { return kernelLines(proxy).size() == 1; }, std::chrono::seconds(30)))
      << proxy.log();
  EXPECT_NE(kernelLines(proxy)[0].find("outcome=idle_timeout"), std::string::npos)
      << kernelLines(proxy)[0];
  EXPECT_NE(busy.one("select 1"), "1");
}

TEST(KernelSplice, ReloadDrainsKernelSplicedSessions) {
  Proxy proxy(kMappings, 1);
  Conn old(proxy.tls("host1"));
  ASSERT_EQ(old.one("select 1"), "1");
  std::vector<pid_t> before = childrenOf(proxy.pid());
  ASSERT_EQ(proxy.signal("reload").exit_code, 0);
  ASSERT_TRUE(eventually([&] {
    return proxy.log().find("generation 2 is serving") != std::string::npos;
  })) << proxy.log();
  // The old worker drains: its kernel-spliced session still works...
  EXPECT_EQ(old.one("select 2"), "2");
  Conn fresh(proxy.tls("host1"));
  EXPECT_EQ(fresh.one("select 3"), "3");
  bool oldAlive = false;
  for (pid_t p : before) {
    oldAlive = oldAlive || kill(p, 0) == 0;
  }
  EXPECT_TRUE(oldAlive) << "the old worker left before its session ended";
  // ...and once it ends, the old worker exits.
  PQfinish(old.c);
  old.c = nullptr;
  EXPECT_TRUE(eventually([&] {
    for (pid_t p : before) {
      if (kill(p, 0) == 0) {
        return false;
      }
    }
    return true;
  })) << proxy.log();
  EXPECT_TRUE(eventually([&] { return kernelLines(proxy).size() >= 1; })) << proxy.log();
}

TEST(KernelSplice, AKilledWorkersKernelSplicedSessionsEndCleanly) {
  Proxy proxy(kMappings, 1);
  Conn c(proxy.tls("host1"));
  ASSERT_EQ(c.one("select 1"), "1");
  std::vector<pid_t> workers = childrenOf(proxy.pid());
  for (pid_t w : workers) {
    kill(w, SIGKILL);
  }
  // Gone once the master has reaped them (a kernel-spliced session needs no process to run a
  // query, so the kill must have taken effect before the test asks).
  ASSERT_TRUE(eventually([&] {
    for (pid_t w : workers) {
      if (kill(w, 0) == 0) {
        return false;
      }
    }
    return true;
  }));
  // The client sees its session end (the kernel closes a dead process's sockets, and with them
  // their sockmap entries), not a hang.
  EXPECT_NE(c.one("select 1"), "1");
  EXPECT_EQ(PQstatus(c.c), CONNECTION_BAD);
  // The replacement worker splices new sessions in the kernel from the same program.
  EXPECT_TRUE(
      eventually([&] { return proxy.log().find("starting a new one") != std::string::npos; }));
  Conn next(proxy.tls("host1"));
  EXPECT_EQ(next.one("select 2"), "2");
  PQfinish(next.c);
  next.c = nullptr;
  EXPECT_TRUE(eventually([&] { return kernelLines(proxy).size() == 1; })) << proxy.log();
}

// A client that connected before the programs loaded (it waited in the listen backlog through the
// reload that loaded them) never got the callback that pauses a socket: joined, a slow reader
// would let the kernel's queue grow without bound. It stays in user space; later ones join.
TEST(KernelSplice, ASocketConnectedBeforeTheProgramLoadedStaysInUserSpace) {
  const std::string rest =
      "max_handshakes: 1\nhandshake_timeout: 60s\n"
      "mappings:\n  - {external: host1.example.com, internal: 127.0.0.1, port: {P1}}\n";
  Proxy proxy("splice: user\n" + rest, 1);
  // One client stalls in its preamble and holds the only handshake place...
  int stalled = connectTcp(proxy.port());
  ASSERT_GE(stalled, 0);
  ASSERT_EQ(write(stalled, "\x00\x00", 2), 2);
  // ...so the next one's TCP handshake completes in the kernel, and it waits in the backlog.
  std::unique_ptr<PGconn, decltype(&PQfinish)> early(PQconnectStart(proxy.tls("host1").c_str()),
                                                     PQfinish);
  PGconn* c = early.get();
  ASSERT_NE(c, nullptr);
  ASSERT_NE(PQstatus(c), CONNECTION_BAD) << PQerrorMessage(c);
  pollfd p{PQsocket(c), POLLOUT, 0};
  ASSERT_EQ(poll(&p, 1, 20000), 1);
  ASSERT_TRUE(eventually([&] {
    return proxy.log().find("max_handshakes (1) reached") != std::string::npos;
  })) << proxy.log();
  proxy.rewrite("splice: kernel\n" + rest, 1);
  ASSERT_EQ(proxy.signal("reload").exit_code, 0);
  ASSERT_TRUE(eventually([&] {
    return proxy.log().find("generation 2 is serving") != std::string::npos;
  })) << proxy.log();
  EXPECT_NE(proxy.log().find("in-kernel splice loaded"), std::string::npos) << proxy.log();
  close(stalled);  // the place frees: the new generation accepts the waiting client
  for (PostgresPollingStatusType st = PGRES_POLLING_WRITING; st != PGRES_POLLING_OK;) {
    ASSERT_NE(st, PGRES_POLLING_FAILED) << PQerrorMessage(c);
    pollfd q{PQsocket(c), static_cast<short>(st == PGRES_POLLING_READING ? POLLIN : POLLOUT), 0};
    ASSERT_EQ(poll(&q, 1, 30000), 1) << proxy.log();
    st = PQconnectPoll(c);
  }
  EXPECT_EQ(Conn::outcome(PQexec(c, "select length(repeat('x', 100000))")), "100000");
  EXPECT_TRUE(eventually([&] {
    return proxy.log().find("a socket connected before the in-kernel splice loaded") !=
           std::string::npos;
  })) << proxy.log();
  Conn late(proxy.tls("host1"));
  EXPECT_EQ(late.one("select 2"), "2");
  PQfinish(late.c);
  late.c = nullptr;
  EXPECT_TRUE(eventually([&] { return kernelLines(proxy).size() == 1; })) << proxy.log();
  early.reset();
  EXPECT_TRUE(eventually([&] {
    return proxy.log().find("mode=passthrough") != proxy.log().rfind("mode=passthrough");
  })) << proxy.log();
  EXPECT_EQ(kernelLines(proxy).size(), 1u) << proxy.log();
}

}  // namespace
}  // namespace pgproxy::it
