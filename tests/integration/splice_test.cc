// The splice: bounded memory against a slow reader, half-close, and workers replaced on crash.
#include <arpa/inet.h>
#include <gtest/gtest.h>
#include <signal.h>
#include <sys/socket.h>
#include <unistd.h>

#include <thread>

#include "harness.h"

namespace pgproxy::it {
namespace {

const char* kPlainDefault =
    "mappings:\n  - {external: host1.example.com, internal: 127.0.0.1, port: {P1}}\n";

std::string queryMessage(const std::string& sql) {
  std::string q("Q");
  std::uint32_t len = htonl(static_cast<std::uint32_t>(4 + sql.size() + 1));
  q.append(reinterpret_cast<char*>(&len), 4);
  q += sql;
  q.push_back('\0');
  return q;
}

long workersRss(pid_t master) {
  long total = 0;
  for (pid_t w : childrenOf(master)) {
    total += rssKib(w);
  }
  return total;
}

TEST(Splice, SlowReaderDoesNotGrowProxyMemory) {
  Proxy proxy(kPlainDefault, 1);
  long before = workersRss(proxy.pid());
  int fd = connectTcp(proxy.port());
  // A small receive buffer so the kernel does not absorb the stream for us.
  int small = 4096;
  setsockopt(fd, SOL_SOCKET, SO_RCVBUF, &small, sizeof(small));
  std::string req = startupPacket({{"user", "postgres"}, {"database", "postgres"}}) +
                    queryMessage("select repeat('x', 1000) from generate_series(1, 2000000)");
  ASSERT_EQ(write(fd, req.data(), req.size()), static_cast<ssize_t>(req.size()));
  // The backend produces ~2 GB; the client reads nothing. Measure once pgproxy has stopped
  // reading too: PostgreSQL's backend then waits to write (wait_event ClientWrite), in several
  // samples in a row, not in a passing moment. A proxy that kept buffering would keep reading, and
  // its memory would grow meanwhile.
  int blocked = 0;
  EXPECT_TRUE(eventually(
      [&] {
        auto r = psql(direct(sandbox().port1),
                      "select count(*) from pg_stat_activity where wait_event = 'ClientWrite' "
                      "and query like 'select repeat(%'");
        blocked = r.output == "1\n" ? blocked + 1 : 0;
        return blocked >= 5;
      },
      std::chrono::seconds(60)))
      << "PostgreSQL never waited for pgproxy to read";
  long during = workersRss(proxy.pid());
  EXPECT_LT(during - before, 16 * 1024) << "worker RSS grew from " << before << " KiB to " << during
                                        << " KiB while the client did not read";
  close(fd);
}

TEST(Splice, ClientHalfCloseStillGetsTheAnswer) {
  Proxy proxy(kPlainDefault, 1);
  int fd = connectTcp(proxy.port());
  std::string terminate("X\x00\x00\x00\x04", 5);
  std::string req = startupPacket({{"user", "postgres"}, {"database", "postgres"}}) +
                    queryMessage("select 'half-closed-ok'") + terminate;
  ASSERT_EQ(write(fd, req.data(), req.size()), static_cast<ssize_t>(req.size()));
  shutdown(fd, SHUT_WR);
  bool closed = false;
  std::string got = readUntilClose(fd, std::chrono::seconds(20), &closed);
  EXPECT_TRUE(closed);
  EXPECT_NE(got.find("half-closed-ok"), std::string::npos);
  close(fd);
}

TEST(Workers, KilledWorkerIsReplaced) {
  Proxy proxy(kPlainDefault, 2);
  std::vector<pid_t> before;
  for (int i = 0; i < 100 && before.size() < 2; ++i) {
    before = childrenOf(proxy.pid());
    std::this_thread::sleep_for(std::chrono::milliseconds(50));
  }
  ASSERT_EQ(before.size(), 2u);
  kill(before[0], SIGKILL);
  std::vector<pid_t> after;
  for (int i = 0; i < 200; ++i) {
    after = childrenOf(proxy.pid());
    if (after.size() == 2 && after != before) {
      break;
    }
    std::this_thread::sleep_for(std::chrono::milliseconds(50));
  }
  ASSERT_EQ(after.size(), 2u);
  EXPECT_NE(std::find(after.begin(), after.end(), before[1]), after.end());
  EXPECT_EQ(std::find(after.begin(), after.end(), before[0]), after.end());
  for (int i = 0; i < 10; ++i) {
    EXPECT_EQ(psql(proxy.plain(), "show cluster_name").output, "host1\n");
  }
  EXPECT_NE(proxy.log().find("was killed by signal 9"), std::string::npos);
}

}  // namespace
}  // namespace pgproxy::it
