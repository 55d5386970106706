#include "pgproxy/limits/client_limits.h"

#include <arpa/inet.h>
#include <gtest/gtest.h>
#include <sys/mman.h>
#include <sys/wait.h>
#include <unistd.h>

#include <cstring>

#include "pgproxy/net/cidr.h"

namespace pgproxy::limits {
namespace {

in6_addr v4(const char* text) {
  sockaddr_in sa{};
  sa.sin_family = AF_INET;
  inet_pton(AF_INET, text, &sa.sin_addr);
  return net::clientKey(reinterpret_cast<sockaddr*>(&sa));
}

in6_addr nth(std::uint32_t i) {
  sockaddr_in sa{};
  sa.sin_family = AF_INET;
  sa.sin_addr.s_addr = htonl(0x0a000000u + i);  // 10.0.0.0/8
  return net::clientKey(reinterpret_cast<sockaddr*>(&sa));
}

Rate rate(std::uint32_t count, std::uint32_t period_ms, std::uint32_t burst) {
  Rate r;
  r.count = count;
  r.period_ms = period_ms;
  r.burst = burst;
  return r;
}

TEST(TokenBucket, BurstThenRefillAtTheRate) {
  Rate r = rate(20, 1000, 40);
  std::uint64_t b = 0;  // fresh: full
  for (int i = 0; i < 40; ++i) {
    EXPECT_TRUE(takeToken(b, 1000, r, nullptr)) << i;
  }
  std::uint32_t wait = 0;
  EXPECT_FALSE(takeToken(b, 1000, r, &wait));
  EXPECT_GE(wait, 49u);  // one token per 50 ms
  EXPECT_LE(wait, 51u);
  EXPECT_FALSE(takeToken(b, 1049, r, nullptr));  // refused attempts spend nothing
  EXPECT_TRUE(takeToken(b, 1050, r, nullptr));
  EXPECT_FALSE(takeToken(b, 1050, r, nullptr));
  // A long pause refills up to the burst, not beyond.
  for (int i = 0; i < 40; ++i) {
    EXPECT_TRUE(takeToken(b, 60'000, r, nullptr)) << i;
  }
  EXPECT_FALSE(takeToken(b, 60'000, r, nullptr));
}

TEST(TokenBucket, SlowRatesAndClockWrap) {
  Rate r = rate(2, 60'000, 2);  // 2/m
  std::uint64_t b = 0;
  std::uint32_t now = 0xffffff00u;  // the millisecond clock wraps soon
  EXPECT_TRUE(takeToken(b, now, r, nullptr));
  EXPECT_TRUE(takeToken(b, now, r, nullptr));
  std::uint32_t wait = 0;
  EXPECT_FALSE(takeToken(b, now, r, &wait));
  EXPECT_GE(wait, 29'000u);
  EXPECT_LE(wait, 30'001u);
  EXPECT_TRUE(takeToken(b, now + 30'000, r, nullptr));  // wrapped past zero
  EXPECT_FALSE(takeToken(b, now + 30'000, r, nullptr));
}

class SharedLimits : public ::testing::Test {
 protected:
  void SetUp() override {
    mem_ = mmap(nullptr, ClientLimits::bytesNeeded(), PROT_READ | PROT_WRITE,
                MAP_SHARED | MAP_ANONYMOUS, -1, 0);
    ASSERT_NE(mem_, MAP_FAILED);
    shared_ = static_cast<LimitsShared*>(mem_);
  }
  void TearDown() override { munmap(mem_, ClientLimits::bytesNeeded()); }
  void* mem_ = nullptr;
  LimitsShared* shared_ = nullptr;
};

TEST_F(SharedLimits, CountTablesRunOutVisibly) {
  ClientLimits master(shared_);
  EXPECT_EQ(master.freeTables(), kMaxWorkers);
  for (std::size_t i = 0; i < kMaxWorkers; ++i) {
    std::size_t t = master.reserve(1);
    ASSERT_NE(t, ClientLimits::kNoTable);
    master.assign(t, static_cast<std::int32_t>(1000 + i));
  }
  EXPECT_EQ(master.freeTables(), 0u);
  EXPECT_EQ(master.reserve(1), ClientLimits::kNoTable);
  ClientLimits late(shared_);
  EXPECT_FALSE(late.claim(5000));
  master.release(1003);
  EXPECT_EQ(master.freeTables(), 1u);
  std::size_t t = master.reserve(1);
  EXPECT_EQ(master.tableOwner(t), 1);
  master.unreserve(t);
  EXPECT_EQ(master.freeTables(), 1u);
}

TEST_F(SharedLimits, SessionsAreSummedOverWorkersAndDroppedWithADeadOne) {
  ClientLimits master(shared_);
  master.seed(12345);
  ClientLimits a(shared_), b(shared_);
  ASSERT_TRUE(a.claim(100));
  ASSERT_TRUE(b.claim(200));
  in6_addr x = v4("192.0.2.7"), y = v4("192.0.2.8");
  EXPECT_TRUE(a.addSession(x));
  EXPECT_TRUE(a.addSession(x));
  EXPECT_TRUE(b.addSession(x));
  EXPECT_TRUE(b.addSession(y));
  EXPECT_EQ(a.sessions(x), 3u);
  EXPECT_EQ(a.sessions(y), 1u);
  a.removeSession(x);
  EXPECT_EQ(b.sessions(x), 2u);
  EXPECT_EQ(shared_->workers[1].used.load(), 2u);
  master.release(200);  // worker b died: its sessions went with it
  EXPECT_EQ(shared_->workers[1].used.load(), 0u);
  EXPECT_EQ(shared_->workers[1].owner.load(), 0);
  EXPECT_EQ(a.sessions(x), 1u);
  EXPECT_EQ(a.sessions(y), 0u);
  a.removeSession(x);
  a.removeSession(x);  // more removes than adds: stays at zero
  EXPECT_EQ(a.sessions(x), 0u);
}

TEST_F(SharedLimits, CountTableStaysExactThroughManyInsertsAndRemoves) {
  ClientLimits master(shared_);
  master.seed(7);
  ClientLimits w(shared_);
  ASSERT_TRUE(w.claim(1));
  // Fill past half the table, remove every other address, check every count (backward-shift
  // deletion must not lose an entry behind a hole).
  const std::uint32_t n = kCountEntries * 3 / 4;
  std::uint32_t added = 0;
  for (std::uint32_t i = 0; i < n; ++i) {
    added += w.addSession(nth(i)) ? 1 : 0;
  }
  EXPECT_GT(added, n * 9 / 10);  // a few may not fit in their probe window
  for (std::uint32_t i = 0; i < n; i += 2) {
    w.removeSession(nth(i));
  }
  for (std::uint32_t i = 0; i < n; ++i) {
    std::uint32_t want = i % 2 == 0 ? 0 : 1;
    std::uint32_t got = w.sessions(nth(i));
    EXPECT_TRUE(got == want || (got == 0 && want == 1)) << i;  // 0 when it never fit
  }
  for (std::uint32_t i = 1; i < n; i += 2) {
    w.removeSession(nth(i));
  }
  EXPECT_EQ(shared_->workers[0].used.load(), 0u);  // a clean exit leaves nothing to clear
  for (std::uint32_t i = 0; i < n; ++i) {
    ASSERT_EQ(w.sessions(nth(i)), 0u) << i;
  }
  // Empty again: every address fits.
  for (std::uint32_t i = 0; i < 1000; ++i) {
    ASSERT_TRUE(w.addSession(nth(i + n)));
  }
}

TEST_F(SharedLimits, FullCountTableAdmitsUncounted) {
  ClientLimits w(shared_);
  ASSERT_TRUE(w.claim(1));
  std::uint32_t refused = 0;
  for (std::uint32_t i = 0; i < kCountEntries + 100; ++i) {
    refused += w.addSession(nth(i)) ? 0 : 1;
  }
  EXPECT_GE(refused, 100u);
  ClientLimits unclaimed(shared_);
  EXPECT_FALSE(unclaimed.addSession(nth(1)));  // no table: nothing counted, nothing crashes
  unclaimed.removeSession(nth(1));
}

TEST_F(SharedLimits, BucketsAreSharedPerClientAndScope) {
  ClientLimits master(shared_);
  master.seed(99);
  ClientLimits a(shared_), b(shared_);
  Rate r = rate(1, 1000, 3);
  in6_addr x = v4("198.51.100.1"), y = v4("198.51.100.2");
  EXPECT_TRUE(a.takeToken(x, 0, r, 5000, nullptr));
  EXPECT_TRUE(b.takeToken(x, 0, r, 5000, nullptr));  // another worker, the same bucket
  EXPECT_TRUE(a.takeToken(x, 0, r, 5000, nullptr));
  std::uint32_t wait = 0;
  EXPECT_FALSE(b.takeToken(x, 0, r, 5000, &wait));
  EXPECT_GT(wait, 900u);
  EXPECT_TRUE(a.takeToken(y, 0, r, 5000, nullptr));  // another client
  EXPECT_TRUE(a.takeToken(x, 1, r, 5000, nullptr));  // a mapping's own bucket
  EXPECT_TRUE(a.takeToken(x, 0, r, 6000, nullptr));  // refilled
}

TEST_F(SharedLimits, AFloodOfAddressesCannotGrowOrPoisonTheTable) {
  ClientLimits master(shared_);
  master.seed(5);
  ClientLimits w(shared_);
  Rate r = rate(1, 60'000, 1);
  in6_addr victim = v4("203.0.113.9");
  EXPECT_TRUE(w.takeToken(victim, 0, r, 1000, nullptr));
  EXPECT_FALSE(w.takeToken(victim, 0, r, 1000, nullptr));
  // Ten times the table's size of other addresses: memory is fixed; the victim's bucket is
  // evicted at some point, which at worst hands it a fresh burst (never a refusal it did not
  // earn).
  for (std::uint32_t i = 0; i < kBucketEntries * 10; ++i) {
    ASSERT_TRUE(w.takeToken(nth(i), 0, r, 2000 + i / 1000, nullptr));
  }
  EXPECT_TRUE(w.takeToken(victim, 0, r, 3000, nullptr));
}

TEST_F(SharedLimits, WorkersInOtherProcessesShareCounts) {
  ClientLimits parent(shared_);
  ASSERT_TRUE(parent.claim(getpid()));
  in6_addr x = v4("192.0.2.1");
  pid_t child = fork();
  if (child == 0) {
    ClientLimits c(shared_);
    bool ok = c.claim(getpid()) && c.addSession(x) && c.addSession(x);
    _exit(ok ? 0 : 1);
  }
  int status = 0;
  waitpid(child, &status, 0);
  ASSERT_EQ(WEXITSTATUS(status), 0);
  EXPECT_TRUE(parent.addSession(x));
  EXPECT_EQ(parent.sessions(x), 3u);
  ClientLimits(shared_).release(child);
  EXPECT_EQ(parent.sessions(x), 1u);
}

}  // namespace
}  // namespace pgproxy::limits
