#include <gtest/gtest.h>
#include <sys/mman.h>

#include <map>
#include <memory>
#include <string>
#include <vector>

#include "pgproxy/base/clock.h"
#include "pgproxy/upstream/backend_table.h"
#include "pgproxy/upstream/balancer.h"

namespace pgproxy::upstream {
namespace {

using config::Balance;

std::map<std::size_t, int> spread(Balancer& b, Balance policy, std::vector<Candidate> c, int n) {
  std::map<std::size_t, int> out;
  std::uint64_t r = 12345;
  for (int i = 0; i < n; ++i) {
    r = r * 6364136223846793005ull + 1442695040888963407ull;
    auto pick = b.pick(policy, c, r >> 11);
    EXPECT_TRUE(pick.has_value());
    ++out[*pick];
    if (policy == Balance::kLeastConn) {
      ++c[*pick].active;  // sessions stay open
    }
  }
  return out;
}

TEST(Balancer, RoundRobinHonoursWeightsSmoothly) {
  Balancer b(2);
  std::vector<Candidate> c = {{3, true, 0}, {1, true, 0}};
  auto s = spread(b, Balance::kRoundRobin, c, 400);
  EXPECT_EQ(s[0], 300);
  EXPECT_EQ(s[1], 100);
  // Smooth: the light backend is not starved for three picks in a row then hit.
  std::vector<std::size_t> seq;
  Balancer b2(3);
  std::vector<Candidate> c3 = {{5, true, 0}, {1, true, 0}, {1, true, 0}};
  for (int i = 0; i < 7; ++i) {
    seq.push_back(*b2.pick(Balance::kRoundRobin, c3, 0));
  }
  EXPECT_EQ(seq, (std::vector<std::size_t>{0, 0, 1, 0, 2, 0, 0}));
}

TEST(Balancer, SkipsIneligibleAndReportsNone) {
  Balancer b(3);
  std::vector<Candidate> c = {{1, false, 0}, {1, true, 0}, {1, false, 0}};
  for (auto policy :
       {Balance::kRoundRobin, Balance::kLeastConn, Balance::kRandom, Balance::kFirst}) {
    for (int i = 0; i < 10; ++i) {
      EXPECT_EQ(b.pick(policy, c, static_cast<std::uint64_t>(i) * 7919), 1u);
    }
  }
  c[1].eligible = false;
  EXPECT_FALSE(b.pick(Balance::kRoundRobin, c, 0).has_value());
  EXPECT_FALSE(b.pick(Balance::kFirst, c, 0).has_value());
}

TEST(Balancer, LeastConnFirstAndRandom) {
  Balancer b(2);
  // Long sessions held on backend 0: new ones go to backend 1 until they are level.
  std::vector<Candidate> c = {{1, true, 10}, {1, true, 0}};
  auto s = spread(b, Balance::kLeastConn, c, 10);
  EXPECT_EQ(s[1], 10);
  // Level: they alternate.
  auto even = spread(b, Balance::kLeastConn, {{1, true, 0}, {1, true, 0}}, 100);
  EXPECT_EQ(even[0], 50);
  // first: always the first eligible.
  EXPECT_EQ(spread(b, Balance::kFirst, {{1, true, 0}, {1, true, 0}}, 50)[0], 50);
  EXPECT_EQ(spread(b, Balance::kFirst, {{1, false, 0}, {1, true, 0}}, 50)[1], 50);
  // random, weighted 3:1: within a few percent over many picks.
  auto r = spread(b, Balance::kRandom, {{3, true, 0}, {1, true, 0}}, 20000);
  EXPECT_NEAR(r[0] / 20000.0, 0.75, 0.02);
}

class TableTest : public ::testing::Test {
 protected:
  void SetUp() override {
    mem_ = mmap(nullptr, BackendTable::bytesNeeded(), PROT_READ | PROT_WRITE,
                MAP_SHARED | MAP_ANONYMOUS, -1, 0);
    table_ = std::make_unique<BackendTable>(static_cast<BackendShared*>(mem_));
  }
  void TearDown() override { munmap(mem_, BackendTable::bytesNeeded()); }
  void* mem_;
  std::unique_ptr<BackendTable> table_;
};

// The table is fixed-size and never forgets a backend: fits() says beforehand whether a
// configuration's backends have room, counting only the ones not registered yet.
TEST_F(TableTest, FitsCountsOnlyNewBackendsAndNamesTheLimit) {
  std::vector<std::string> first;
  for (std::size_t i = 0; i < kMaxBackends - 2; ++i) {
    first.push_back("10.0.0.1:" + std::to_string(1000 + i));
  }
  ASSERT_TRUE(table_->fits(first).ok());
  for (const auto& k : first) {
    ASSERT_NE(table_->registerBackend(k), kNoBackend);
  }
  // The same backends again, twice over, plus two new ones (one named twice): exactly full.
  std::vector<std::string> again = first;
  again.insert(again.end(), first.begin(), first.end());
  again.push_back("db1:5432");
  again.push_back("db1:5432");
  again.push_back("db2:5432");
  EXPECT_TRUE(table_->fits(again).ok());
  again.push_back("db3:5432");
  auto st = table_->fits(again);
  ASSERT_FALSE(st.ok());
  EXPECT_NE(
      st.error().message.find("needs 3 new backend(s), and " + std::to_string(kMaxBackends - 2) +
                              " of the " + std::to_string(kMaxBackends) + " backend slots"),
      std::string::npos)
      << st.error().message;
}

TEST_F(TableTest, FallAndRiseTransitionsHappenOnce) {
  std::size_t a = table_->registerBackend("10.0.0.1:5432");
  EXPECT_EQ(table_->registerBackend("10.0.0.1:5432"), a);  // a reload keeps the slot
  EXPECT_EQ(table_->find("10.0.0.9:5432"), kNoBackend);
  EXPECT_EQ(table_->health(a), Health::kUnknown);
  EXPECT_FALSE(table_->recordFailure(a, 3, 111, "refused"));
  EXPECT_FALSE(table_->recordFailure(a, 3, 111, "refused"));
  EXPECT_TRUE(table_->recordFailure(a, 3, 111, "refused"));   // the third one takes it down
  EXPECT_FALSE(table_->recordFailure(a, 3, 111, "refused"));  // and only once
  EXPECT_EQ(table_->health(a), Health::kDown);
  EXPECT_EQ(table_->lastErrno(a), 111);
  std::uint64_t now = base::monotonicUs() / 1000;
  EXPECT_FALSE(table_->retryDue(a, now, 10'000));  // passive: not again for a while
  EXPECT_TRUE(table_->retryDue(a, now + 10'000, 10'000));
  EXPECT_FALSE(table_->recordCheckSuccess(a, 2));
  EXPECT_TRUE(table_->recordCheckSuccess(a, 2));  // rise = 2
  EXPECT_EQ(table_->health(a), Health::kUp);
  // With checks, a session's success does not bring a down backend back early; without, it does.
  for (int i = 0; i < 3; ++i) {
    table_->recordFailure(a, 3, 111, "refused");
  }
  EXPECT_FALSE(table_->recordSessionSuccess(a, true));
  EXPECT_EQ(table_->health(a), Health::kDown);
  EXPECT_TRUE(table_->recordSessionSuccess(a, false));
  EXPECT_EQ(table_->health(a), Health::kUp);
  table_->addActive(a, 2);
  table_->addActive(a, -1);
  EXPECT_EQ(table_->active(a), 1);
  // Out-of-range slots (a full table) are ignored, never written.
  EXPECT_FALSE(table_->recordFailure(kNoBackend, 1, 1, "refused"));
  table_->addActive(kNoBackend, 1);
  EXPECT_EQ(table_->health(kNoBackend), Health::kUnknown);
}

TEST_F(TableTest, LastErrorAndCheckTimeAreKeptCut) {
  std::size_t a = table_->registerBackend("10.0.0.1:5432");
  EXPECT_EQ(table_->lastError(a), "");
  EXPECT_EQ(table_->lastCheckMs(a), 0u);
  table_->recordFailure(a, 3, 111, "connect: Connection refused");
  EXPECT_EQ(table_->lastError(a), "connect: Connection refused");
  table_->recordFailure(a, 3, 0, std::string(500, 'x'));  // cut, never past the slot
  EXPECT_EQ(table_->lastError(a), std::string(kLastErrorBytes - 1, 'x'));
  table_->setLastError(a, "short");  // a shorter text leaves nothing of the longer one
  EXPECT_EQ(table_->lastError(a), "short");
  table_->noteCheck(a, 1234);
  EXPECT_EQ(table_->lastCheckMs(a), 1234u);
  EXPECT_EQ(table_->lastError(kNoBackend), "");
  table_->setLastError(kNoBackend, "ignored");
}

TEST_F(TableTest, BoundedAndSampledPerMapping) {
  for (std::size_t i = 0; i < kMaxBackends; ++i) {
    EXPECT_NE(table_->registerBackend("h" + std::to_string(i) + ":1"), kNoBackend);
  }
  EXPECT_EQ(table_->registerBackend("one-too-many:1"), kNoBackend);
  EXPECT_EQ(table_->registerBackend(std::string(400, 'x')), kNoBackend);
}

}  // namespace
}  // namespace pgproxy::upstream
