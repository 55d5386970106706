// The shared pool table: caps over all workers, per-worker shares a dead worker's fold removes
// exactly, entries that come and go, and the pool metrics.
#include "pgproxy/pool/shared_pools.h"

#include <gtest/gtest.h>
#include <sched.h>
#include <sys/mman.h>
#include <sys/wait.h>
#include <unistd.h>

#include <atomic>
#include <memory>
#include <string>
#include <string_view>
#include <vector>

#include "pgproxy/metrics/metrics.h"

namespace pgproxy::pool {
namespace {

// A zeroed table in a shared mapping, as the master's memfd is, so forked children share it.
class SharedPoolsTest : public ::testing::Test {
 protected:
  // Forked children wait here until all are forked, so that they run at the same time.
  struct StartLine {
    std::atomic<int> open;
    void wait() {
      while (open.load() == 0) {
        sched_yield();
      }
    }
    void go() { open.store(1); }
  };
  void SetUp() override {
    mem_ = mmap(nullptr, SharedPools::bytesNeeded(), PROT_READ | PROT_WRITE,
                MAP_SHARED | MAP_ANONYMOUS, -1, 0);
    ASSERT_NE(mem_, MAP_FAILED);
    SharedPools(shared()).seed(0x5eed);
    start_ = static_cast<StartLine*>(mmap(nullptr, sizeof(StartLine), PROT_READ | PROT_WRITE,
                                          MAP_SHARED | MAP_ANONYMOUS, -1, 0));
    ASSERT_NE(start_, MAP_FAILED);
  }
  void TearDown() override {
    munmap(mem_, SharedPools::bytesNeeded());
    munmap(start_, sizeof(StartLine));
  }
  StartLine* startLine() { return start_; }
  PoolsShared* shared() { return static_cast<PoolsShared*>(mem_); }
  // The view of the worker in slot `slot`.
  SharedPools worker(std::size_t slot) {
    SharedPools p(shared());
    p.attach(slot);
    return p;
  }
  std::string render(unsigned max_pools) {
    std::string out;
    SharedPools(shared()).render(out, max_pools);
    return out;
  }
  void* mem_ = nullptr;
  StartLine* start_ = nullptr;
};

// The value of the one sample line that starts with `series` ("name{labels}"), -1 when absent.
long long sampleValue(const std::string& text, const std::string& series) {
  std::size_t at = text.find("\n" + series + " ");
  if (at == std::string::npos) {
    return -1;
  }
  return std::stoll(text.substr(at + series.size() + 2));
}

std::size_t count(const std::string& text, const std::string& what) {
  std::size_t n = 0;
  for (std::size_t at = text.find(what); at != std::string::npos; at = text.find(what, at + 1)) {
    ++n;
  }
  return n;
}

TEST_F(SharedPoolsTest, PoolCapHoldsOverWorkers) {
  SharedPools a = worker(0), b = worker(1);
  std::size_t pa = a.openPool("m", "10.0.0.1:5432", "app", "appdb");
  std::size_t pb = b.openPool("m", "10.0.0.1:5432", "app", "appdb");
  ASSERT_NE(pa, kNoPool);
  EXPECT_EQ(pa, pb);  // one entry for every worker
  EXPECT_TRUE(a.tryAddServer(pa, 3, kNoPool, 0));
  EXPECT_TRUE(b.tryAddServer(pb, 3, kNoPool, 0));
  EXPECT_TRUE(a.tryAddServer(pa, 3, kNoPool, 0));
  EXPECT_FALSE(b.tryAddServer(pb, 3, kNoPool, 0));
  EXPECT_EQ(a.servers(pa), 3u);
  EXPECT_EQ(a.serversIn(pa, ServerState::kLogin), 3u);
  EXPECT_TRUE(b.tryAddServer(pb, 4, kNoPool, 0));  // a reload raised the cap
  a.removeServer(pa, kNoPool, ServerState::kLogin);
  EXPECT_EQ(b.servers(pb), 3u);
  EXPECT_FALSE(b.tryAddServer(pb, 0, kNoPool, 0));
  // Other users and databases are other pools.
  std::size_t other = a.openPool("m", "10.0.0.1:5432", "app", "otherdb");
  EXPECT_NE(other, pa);
  EXPECT_TRUE(a.tryAddServer(other, 1, kNoPool, 0));
  EXPECT_EQ(a.servers(other), 1u);
}

TEST_F(SharedPoolsTest, DatabaseCapSpansPoolsAndUndoesThePoolCount) {
  SharedPools w = worker(2);
  std::size_t p1 = w.openPool("m", "b:5432", "alice", "shop");
  std::size_t p2 = w.openPool("m", "b:5432", "bob", "shop");
  std::size_t db = w.openDatabase("b:5432", "shop");
  ASSERT_NE(db, kNoPool);
  EXPECT_NE(db, p1);
  EXPECT_NE(db, p2);
  EXPECT_EQ(w.openDatabase("b:5432", "shop"), db);
  EXPECT_TRUE(w.tryAddServer(p1, 5, db, 3));
  EXPECT_TRUE(w.tryAddServer(p1, 5, db, 3));
  EXPECT_TRUE(w.tryAddServer(p2, 5, db, 3));
  EXPECT_FALSE(w.tryAddServer(p2, 5, db, 3));  // the database is full, the pool is not
  EXPECT_EQ(w.servers(p2), 1u);                // and its count was given back
  EXPECT_EQ(w.servers(db), 3u);
  w.removeServer(p1, db, ServerState::kLogin);
  EXPECT_TRUE(w.tryAddServer(p2, 5, db, 3));
  EXPECT_EQ(w.servers(db), 3u);
  // Without a database cap the servers still count in the database (a reload may set one).
  EXPECT_TRUE(w.tryAddServer(p1, 5, db, 0));
  EXPECT_EQ(w.servers(db), 4u);
  EXPECT_FALSE(w.tryAddServer(p1, 5, db, 4));
  EXPECT_EQ(w.servers(p1), 2u);
}

TEST_F(SharedPoolsTest, ServersMoveBetweenStates) {
  SharedPools w = worker(0);
  std::size_t p = w.openPool("m", "b", "u", "d");
  ASSERT_TRUE(w.tryAddServer(p, 10, kNoPool, 0));
  ASSERT_TRUE(w.tryAddServer(p, 10, kNoPool, 0));
  w.moveServer(p, ServerState::kLogin, ServerState::kIdle);
  w.moveServer(p, ServerState::kLogin, ServerState::kIdle);
  w.moveServer(p, ServerState::kIdle, ServerState::kActive);
  EXPECT_EQ(w.serversIn(p, ServerState::kLogin), 0u);
  EXPECT_EQ(w.serversIn(p, ServerState::kIdle), 1u);
  EXPECT_EQ(w.serversIn(p, ServerState::kActive), 1u);
  w.moveServer(p, ServerState::kActive, ServerState::kUsed);
  w.moveServer(p, ServerState::kUsed, ServerState::kUsed);
  EXPECT_EQ(w.serversIn(p, ServerState::kUsed), 1u);
  EXPECT_EQ(w.servers(p), 2u);
  w.removeServer(p, kNoPool, ServerState::kUsed);
  w.removeServer(p, kNoPool, ServerState::kIdle);
  for (auto s :
       {ServerState::kLogin, ServerState::kIdle, ServerState::kActive, ServerState::kUsed}) {
    EXPECT_EQ(w.serversIn(p, s), 0u);
  }
  EXPECT_EQ(w.servers(p), 0u);
}

TEST_F(SharedPoolsTest, WaitingCountsPerWorkerAndInAll) {
  SharedPools a = worker(0), b = worker(7);
  std::size_t p = a.openPool("m", "b", "u", "d");
  ASSERT_EQ(b.openPool("m", "b", "u", "d"), p);
  a.addWaiting(p, 2);
  b.addWaiting(p, 1);
  EXPECT_EQ(a.waiting(p), 3u);
  EXPECT_EQ(a.myWaiting(p), 2u);
  EXPECT_EQ(b.myWaiting(p), 1u);
  a.addWaiting(p, -2);
  EXPECT_EQ(b.waiting(p), 1u);
  EXPECT_EQ(a.myWaiting(p), 0u);
}

TEST_F(SharedPoolsTest, FoldOfADeadWorkerRestoresTheTotalsExactly) {
  SharedPools dead = worker(3), alive = worker(5);
  std::size_t p = dead.openPool("m", "b", "u", "d");
  std::size_t db = dead.openDatabase("b", "d");
  std::size_t only = dead.openPool("m", "b", "lonely", "d");  // no one else has it open
  ASSERT_EQ(alive.openPool("m", "b", "u", "d"), p);
  ASSERT_EQ(alive.openDatabase("b", "d"), db);
  ASSERT_TRUE(dead.tryAddServer(p, 10, db, 10));
  ASSERT_TRUE(dead.tryAddServer(p, 10, db, 10));
  ASSERT_TRUE(dead.tryAddServer(only, 10, db, 10));
  dead.moveServer(p, ServerState::kLogin, ServerState::kActive);
  dead.addWaiting(p, 4);
  dead.countTransaction(p);
  ASSERT_TRUE(alive.tryAddServer(p, 10, db, 10));
  alive.moveServer(p, ServerState::kLogin, ServerState::kIdle);
  alive.addWaiting(p, 1);
  ASSERT_EQ(alive.servers(p), 3u);
  ASSERT_EQ(alive.servers(db), 4u);

  SharedPools(shared()).foldSlot(3);  // the master, once the worker in slot 3 died

  EXPECT_EQ(alive.servers(p), 1u);
  EXPECT_EQ(alive.servers(db), 1u);
  EXPECT_EQ(alive.serversIn(p, ServerState::kIdle), 1u);
  EXPECT_EQ(alive.serversIn(p, ServerState::kActive), 0u);
  EXPECT_EQ(alive.serversIn(p, ServerState::kLogin), 0u);
  EXPECT_EQ(alive.waiting(p), 1u);
  EXPECT_EQ(dead.myWaiting(p), 0u);
  std::string text = render(100);
  EXPECT_NE(text.find("user=\"u\""), std::string::npos);
  EXPECT_EQ(text.find("user=\"lonely\""), std::string::npos) << "its only holder died: freed";
  EXPECT_NE(text.find("pgproxy_pool_transactions_total{mapping=\"m\",backend=\"b\",user=\"u\","
                      "database=\"d\"} 1\n"),
            std::string::npos)
      << "counters are not folded";
  // A second fold of the same slot (or of one that exited cleanly) changes nothing.
  SharedPools(shared()).foldSlot(3);
  SharedPools(shared()).foldSlot(9);
  EXPECT_EQ(alive.servers(p), 1u);

  // The survivor ends its servers and closes: the entries go.
  alive.removeServer(p, db, ServerState::kIdle);
  alive.addWaiting(p, -1);
  alive.close(p);
  alive.close(db);
  EXPECT_EQ(render(100).find("user=\"u\""), std::string::npos);
}

TEST_F(SharedPoolsTest, AClosedEntryStaysWhileItsServersAreCounted) {
  SharedPools w = worker(0);
  std::size_t p = w.openPool("m", "b", "u", "d");
  ASSERT_TRUE(w.tryAddServer(p, 1, kNoPool, 0));
  w.countQuery(p);
  w.close(p);  // closed first, its server ends later
  EXPECT_NE(render(100).find("user=\"u\""), std::string::npos);
  EXPECT_FALSE(worker(1).tryAddServer(worker(1).openPool("m", "b", "u", "d"), 1, kNoPool, 0));
  worker(1).close(p);
  w.removeServer(p, kNoPool, ServerState::kLogin);
  EXPECT_EQ(render(100).find("user=\"u\""), std::string::npos);
}

TEST_F(SharedPoolsTest, AFreedEntryStartsAgainFromZero) {
  SharedPools w = worker(0);
  std::size_t p = w.openPool("m", "b", "u", "d");
  std::size_t again = w.openPool("m", "b", "u", "d");  // this worker's second reference
  EXPECT_EQ(again, p);
  w.countQuery(p);
  w.countQuery(p);
  w.observeWait(p, 700);
  const std::string series = "{mapping=\"m\",backend=\"b\",user=\"u\",database=\"d\"}";
  EXPECT_EQ(sampleValue(render(100), "pgproxy_pool_queries_total" + series), 2);
  w.close(p);
  EXPECT_EQ(sampleValue(render(100), "pgproxy_pool_queries_total" + series), 2);
  w.close(p);
  EXPECT_EQ(sampleValue(render(100), "pgproxy_pool_queries_total" + series), -1);
  std::size_t reopened = w.openPool("m", "b", "u", "d");
  ASSERT_NE(reopened, kNoPool);
  const std::string text = render(100);
  EXPECT_EQ(sampleValue(text, "pgproxy_pool_queries_total" + series), 0);
  EXPECT_EQ(sampleValue(text, "pgproxy_pool_wait_seconds_count" + series), 0);
  // Closing more often than opening does not take another worker's reference.
  SharedPools other = worker(1);
  ASSERT_EQ(other.openPool("m", "b", "u", "d"), reopened);
  w.close(reopened);
  w.close(reopened);
  EXPECT_EQ(sampleValue(render(100), "pgproxy_pool_queries_total" + series), 0);
  other.close(reopened);
  EXPECT_EQ(sampleValue(render(100), "pgproxy_pool_queries_total" + series), -1);
}

TEST_F(SharedPoolsTest, AFullTableRefusesNewEntriesAndRecovers) {
  SharedPools w = worker(0);
  std::vector<std::size_t> opened;
  std::size_t e;
  while ((e = w.openPool("m", "b", "user" + std::to_string(opened.size()), "d")) != kNoPool) {
    opened.push_back(e);
    ASSERT_LE(opened.size(), kMaxPools);
  }
  // A probe window fills before the table does, but not long before.
  EXPECT_GT(opened.size(), kMaxPools / 2);
  // Entries already there are still found.
  EXPECT_EQ(w.openPool("m", "b", "user0", "d"), opened[0]);
  w.close(opened[0]);
  for (std::size_t x : opened) {
    w.close(x);
  }
  EXPECT_EQ(count(render(0), "pgproxy_pool_clients_waiting{"), 0u);
  std::size_t reopened = 0;
  while (w.openPool("m", "b", "again" + std::to_string(reopened), "d") != kNoPool) {
    ++reopened;
    ASSERT_LE(reopened, kMaxPools);
  }
  EXPECT_GT(reopened, kMaxPools / 2);
}

TEST_F(SharedPoolsTest, RendersEveryPoolUpToMaxPoolsThenOther) {
  SharedPools w = worker(0);
  std::vector<std::size_t> pools;
  for (const char* user : {"u1", "u2", "u3", "u4"}) {
    pools.push_back(w.openPool("m1", "b:1", user, "d"));
  }
  pools.push_back(w.openPool("m2", "b:1", "u1", "d"));
  w.openDatabase("b:1", "d");  // a database entry is no pool: not rendered
  for (std::size_t i = 0; i < pools.size(); ++i) {
    for (std::size_t n = 0; n <= i; ++n) {
      ASSERT_TRUE(w.tryAddServer(pools[i], 100, kNoPool, 0));
      w.countQuery(pools[i]);
    }
    w.moveServer(pools[i], ServerState::kLogin, ServerState::kIdle);
    w.addWaiting(pools[i], 1);
    w.countTransaction(pools[i]);
    w.observeWait(pools[i], 2000);
  }

  std::string all = render(1000);
  for (const auto& m : metrics::metricTable()) {
    if (std::string_view(m.name).starts_with("pgproxy_pool_")) {
      EXPECT_NE(all.find(std::string("# HELP ") + m.name + " "), std::string::npos) << m.name;
      EXPECT_NE(all.find(std::string("# TYPE ") + m.name + " " + m.type + "\n"), std::string::npos)
          << m.name;
    }
  }
  EXPECT_EQ(count(all, "pgproxy_pool_clients_waiting{"), 5u);
  EXPECT_EQ(count(all, "pgproxy_pool_server_connections{"), 20u);  // four states each
  EXPECT_EQ(sampleValue(all,
                        "pgproxy_pool_server_connections{mapping=\"m1\",backend=\"b:1\","
                        "user=\"u3\",database=\"d\",state=\"idle\"}"),
            1);
  EXPECT_EQ(sampleValue(all,
                        "pgproxy_pool_server_connections{mapping=\"m1\",backend=\"b:1\","
                        "user=\"u3\",database=\"d\",state=\"login\"}"),
            2);
  EXPECT_EQ(sampleValue(all,
                        "pgproxy_pool_server_connections{mapping=\"m1\",backend=\"b:1\","
                        "user=\"u3\",database=\"d\",state=\"active\"}"),
            0);
  EXPECT_EQ(sampleValue(all,
                        "pgproxy_pool_queries_total{mapping=\"m2\",backend=\"b:1\",user="
                        "\"u1\",database=\"d\"}"),
            5);
  const std::string u2 = "{mapping=\"m1\",backend=\"b:1\",user=\"u2\",database=\"d\"";
  EXPECT_EQ(sampleValue(all, "pgproxy_pool_wait_seconds_bucket" + u2 + ",le=\"0.001\"}"), 0);
  EXPECT_EQ(sampleValue(all, "pgproxy_pool_wait_seconds_bucket" + u2 + ",le=\"0.0025\"}"), 1);
  EXPECT_EQ(sampleValue(all, "pgproxy_pool_wait_seconds_bucket" + u2 + ",le=\"+Inf\"}"), 1);
  EXPECT_NE(all.find("pgproxy_pool_wait_seconds_sum" + u2 + "} 0.002\n"), std::string::npos);
  EXPECT_EQ(sampleValue(all, "pgproxy_pool_wait_seconds_count" + u2 + "}"), 1);
  EXPECT_EQ(all.find("user=\"\""), std::string::npos);  // no database entry

  // Two label sets of their own (table order); the rest summed per mapping and backend.
  std::string few = render(2);
  std::size_t own = count(few, "pgproxy_pool_clients_waiting{") -
                    count(few,
                          "pgproxy_pool_clients_waiting{mapping=\"m1\",backend=\"b:1\","
                          "user=\"other\",database=\"other\"}") -
                    count(few,
                          "pgproxy_pool_clients_waiting{mapping=\"m2\",backend=\"b:1\","
                          "user=\"other\",database=\"other\"}");
  EXPECT_EQ(own, 2u);
  long long waiting = 0, queries = 0, waits = 0;
  for (const std::string& key : {std::string("m1\",backend=\"b:1\",user=\"u1"),
                                 std::string("m1\",backend=\"b:1\",user=\"u2"),
                                 std::string("m1\",backend=\"b:1\",user=\"u3"),
                                 std::string("m1\",backend=\"b:1\",user=\"u4"),
                                 std::string("m2\",backend=\"b:1\",user=\"u1"),
                                 std::string("m1\",backend=\"b:1\",user=\"other"),
                                 std::string("m2\",backend=\"b:1\",user=\"other")}) {
    std::string db = key.ends_with("other") ? "other" : "d";
    std::string labels = "{mapping=\"" + key + "\",database=\"" + db + "\"";
    waiting += std::max(0ll, sampleValue(few, "pgproxy_pool_clients_waiting" + labels + "}"));
    queries += std::max(0ll, sampleValue(few, "pgproxy_pool_queries_total" + labels + "}"));
    waits += std::max(0ll, sampleValue(few, "pgproxy_pool_wait_seconds_count" + labels + "}"));
  }
  EXPECT_EQ(waiting, 5);
  EXPECT_EQ(queries, 1 + 2 + 3 + 4 + 5);
  EXPECT_EQ(waits, 5);
  // Nothing of its own at all.
  std::string none = render(0);
  EXPECT_EQ(count(none, "pgproxy_pool_clients_waiting{"), 2u);
  EXPECT_EQ(sampleValue(none,
                        "pgproxy_pool_queries_total{mapping=\"m1\",backend=\"b:1\",user="
                        "\"other\",database=\"other\"}"),
            1 + 2 + 3 + 4);
}

TEST_F(SharedPoolsTest, LabelsAreEscapedAndCut) {
  SharedPools w = worker(0);
  std::string longName(100, 'x');
  // A two-byte UTF-8 character across the cut is dropped whole.
  std::string utf8 = std::string(kMaxLabel - 1, 'y') + "\xc3\xa9" + "tail";
  ASSERT_NE(w.openPool("we\"ird\\map", "b\nc", longName, utf8), kNoPool);
  std::string text = render(10);
  EXPECT_NE(text.find("pgproxy_pool_clients_waiting{mapping=\"we\\\"ird\\\\map\",backend=\"b\\nc\","
                      "user=\"" +
                      std::string(kMaxLabel, 'x') + "\",database=\"" +
                      std::string(kMaxLabel - 1, 'y') + "\"} 0\n"),
            std::string::npos)
      << text;
  // Names alike in their first kMaxLabel bytes are still different pools.
  std::size_t a = w.openPool("m", "b", std::string(kMaxLabel, 'z') + "1", "d");
  std::size_t b = w.openPool("m", "b", std::string(kMaxLabel, 'z') + "2", "d");
  EXPECT_NE(a, b);
  ASSERT_TRUE(w.tryAddServer(a, 1, kNoPool, 0));
  EXPECT_TRUE(w.tryAddServer(b, 1, kNoPool, 0));
  // They render as one label set, summed (a series may appear once only).
  EXPECT_EQ(sampleValue(render(10),
                        "pgproxy_pool_server_connections{mapping=\"m\",backend=\"b\","
                        "user=\"" +
                            std::string(kMaxLabel, 'z') + "\",database=\"d\",state=\"login\"}"),
            2);
}

// Workers in separate processes hammer one pool and its database: the caps hold at every moment
// (each child checks the totals right after its own successful add) and everything ends at 0.
TEST_F(SharedPoolsTest, CapsHoldAcrossProcesses) {
  constexpr int kChildren = 6;
  constexpr unsigned kCap = 5;
  constexpr unsigned kDbCap = 7;
  constexpr int kRounds = 200000;
  struct Seen {
    std::atomic<std::uint32_t> pool_max;
    std::atomic<std::uint32_t> db_max;
    std::atomic<std::uint32_t> adds;
    std::atomic<std::uint32_t> refused;
    std::atomic<std::uint32_t> arrived;  // seen[0]'s: children holding their first servers
  };
  auto* seen = static_cast<Seen*>(mmap(nullptr, sizeof(Seen) * kChildren, PROT_READ | PROT_WRITE,
                                       MAP_SHARED | MAP_ANONYMOUS, -1, 0));
  ASSERT_NE(seen, MAP_FAILED);
  std::vector<pid_t> children;
  for (int c = 0; c < kChildren; ++c) {
    pid_t pid = fork();
    ASSERT_GE(pid, 0);
    if (pid == 0) {
      SharedPools w = worker(static_cast<std::size_t>(10 + c));
      startLine()->wait();
      // Two pools (different users) of one database: the database cap binds before the pools'.
      std::size_t p = w.openPool("m", "b", c % 2 ? "odd" : "even", "d");
      std::size_t db = w.openDatabase("b", "d");
      if (p == kNoPool || db == kNoPool) {
        seen[0].arrived.fetch_add(1);  // the others do not wait for it
        _exit(2);
      }
      std::vector<ServerState> mine;
      // First every child asks for three servers and holds what it got until all have asked:
      // 18 asks against a database cap of 7 are refused at least 11 times however the children
      // are scheduled (a loaded machine may run them one after another).
      for (int i = 0; i < 3; ++i) {
        if (w.tryAddServer(p, kCap, db, kDbCap)) {
          seen[c].adds.fetch_add(1);
          mine.push_back(ServerState::kLogin);
        } else {
          seen[c].refused.fetch_add(1);
        }
      }
      seen[0].arrived.fetch_add(1);
      while (seen[0].arrived.load() < static_cast<std::uint32_t>(kChildren)) {
        sched_yield();
      }
      std::uint32_t state = static_cast<std::uint32_t>(c) * 2654435761u + 1;
      for (int i = 0; i < kRounds; ++i) {
        state = state * 1664525u + 1013904223u;
        if (mine.size() < 3 && (state >> 16) % 2 == 0) {
          if (w.tryAddServer(p, kCap, db, kDbCap)) {
            std::uint32_t now = w.servers(p);
            std::uint32_t in_db = w.servers(db);
            if (now > seen[c].pool_max.load()) {
              seen[c].pool_max.store(now);
            }
            if (in_db > seen[c].db_max.load()) {
              seen[c].db_max.store(in_db);
            }
            seen[c].adds.fetch_add(1);
            mine.push_back(ServerState::kLogin);
          } else {
            seen[c].refused.fetch_add(1);
          }
        } else if (!mine.empty()) {
          if ((state >> 20) % 2 == 0 && mine.back() == ServerState::kLogin) {
            w.moveServer(p, ServerState::kLogin, ServerState::kIdle);
            mine.back() = ServerState::kIdle;
          } else {
            w.removeServer(p, db, mine.back());
            mine.pop_back();
          }
        }
      }
      for (ServerState s : mine) {
        w.removeServer(p, db, s);
      }
      w.close(p);
      w.close(db);
      _exit(0);
    }
    children.push_back(pid);
  }
  startLine()->go();
  for (pid_t pid : children) {
    int status = 0;
    ASSERT_EQ(waitpid(pid, &status, 0), pid);
    EXPECT_TRUE(WIFEXITED(status) && WEXITSTATUS(status) == 0) << status;
  }
  std::uint32_t adds = 0, refused = 0;
  for (int c = 0; c < kChildren; ++c) {
    EXPECT_LE(seen[c].pool_max.load(), kCap) << c;
    EXPECT_LE(seen[c].db_max.load(), kDbCap) << c;
    adds += seen[c].adds.load();
    refused += seen[c].refused.load();
  }
  EXPECT_GT(adds, 10000u);
  EXPECT_GE(refused, 3u * kChildren - kDbCap) << "the caps were reached";
  SharedPools w = worker(0);
  std::size_t p = w.openPool("m", "b", "even", "d");
  std::size_t db = w.openDatabase("b", "d");
  EXPECT_EQ(w.servers(p), 0u);
  EXPECT_EQ(w.servers(db), 0u);
  EXPECT_EQ(w.serversIn(p, ServerState::kIdle), 0u);
  EXPECT_EQ(w.serversIn(p, ServerState::kLogin), 0u);
  EXPECT_EQ(w.servers(w.openPool("m", "b", "odd", "d")), 0u);
  munmap(seen, sizeof(Seen) * kChildren);
}

// Processes open, use and close the same few pools while others free and create them again: no
// pool ever exists twice (its cap would split), checked with a count kept beside the table.
TEST_F(SharedPoolsTest, EntriesComeAndGoAcrossProcessesWithoutDuplicates) {
  constexpr int kChildren = 6;
  constexpr int kKeys = 3;
  constexpr int kRounds = 50000;
  struct Check {
    std::atomic<std::int32_t> holders[kKeys];  // servers of key k over all children
    std::atomic<std::uint32_t> overshoot;
    std::atomic<std::uint32_t> refused;
  };
  auto* check = static_cast<Check*>(
      mmap(nullptr, sizeof(Check), PROT_READ | PROT_WRITE, MAP_SHARED | MAP_ANONYMOUS, -1, 0));
  ASSERT_NE(check, MAP_FAILED);
  std::vector<pid_t> children;
  for (int c = 0; c < kChildren; ++c) {
    pid_t pid = fork();
    ASSERT_GE(pid, 0);
    if (pid == 0) {
      SharedPools w = worker(static_cast<std::size_t>(20 + c));
      startLine()->wait();
      for (int i = 0; i < kRounds; ++i) {
        int k = (i + c) % kKeys;
        std::size_t p = w.openPool("m", "b", "user" + std::to_string(k), "d");
        if (p == kNoPool) {
          check->refused.fetch_add(1);
          continue;
        }
        if (w.tryAddServer(p, 1, kNoPool, 0)) {
          if (check->holders[k].fetch_add(1) + 1 > 1) {
            check->overshoot.fetch_add(1);
          }
          check->holders[k].fetch_sub(1);
          w.removeServer(p, kNoPool, ServerState::kLogin);
        }
        w.close(p);
      }
      _exit(0);
    }
    children.push_back(pid);
  }
  startLine()->go();
  for (pid_t pid : children) {
    int status = 0;
    ASSERT_EQ(waitpid(pid, &status, 0), pid);
    EXPECT_TRUE(WIFEXITED(status) && WEXITSTATUS(status) == 0) << status;
  }
  EXPECT_EQ(check->overshoot.load(), 0u);
  // A refusal is a wait for the insert lock beyond its budget, which only a holder descheduled
  // for that long causes (these children keep every CPU busy): rare, never a lost entry.
  EXPECT_LT(check->refused.load(), static_cast<std::uint32_t>(kChildren * kRounds / 100));
  EXPECT_EQ(count(render(100), "pgproxy_pool_clients_waiting{"), 0u) << "all closed: all freed";
  munmap(check, sizeof(Check));
}

// A worker that dies without closing anything (as a crash leaves it) is folded out by the master.
TEST_F(SharedPoolsTest, AWorkerThatDiedHoldingServersIsFoldedOut) {
  pid_t pid = fork();
  ASSERT_GE(pid, 0);
  if (pid == 0) {
    SharedPools w = worker(30);
    std::size_t p = w.openPool("m", "b", "u", "d");
    std::size_t db = w.openDatabase("b", "d");
    for (int i = 0; i < 3; ++i) {
      if (!w.tryAddServer(p, 3, db, 3)) {
        _exit(2);
      }
    }
    w.moveServer(p, ServerState::kLogin, ServerState::kActive);
    w.addWaiting(p, 2);
    _exit(0);
  }
  int status = 0;
  ASSERT_EQ(waitpid(pid, &status, 0), pid);
  ASSERT_TRUE(WIFEXITED(status) && WEXITSTATUS(status) == 0);
  SharedPools other = worker(31);
  std::size_t p = other.openPool("m", "b", "u", "d");
  std::size_t db = other.openDatabase("b", "d");
  EXPECT_FALSE(other.tryAddServer(p, 3, db, 0));
  EXPECT_EQ(other.waiting(p), 2u);
  SharedPools(shared()).foldSlot(30);
  EXPECT_EQ(other.servers(p), 0u);
  EXPECT_EQ(other.servers(db), 0u);
  EXPECT_EQ(other.serversIn(p, ServerState::kActive), 0u);
  EXPECT_EQ(other.waiting(p), 0u);
  EXPECT_TRUE(other.tryAddServer(p, 3, db, 3));
  other.removeServer(p, db, ServerState::kLogin);
  other.close(p);
  other.close(db);
  EXPECT_EQ(count(render(100), "pgproxy_pool_clients_waiting{"), 0u);
}

}  // namespace
}  // namespace pgproxy::pool
