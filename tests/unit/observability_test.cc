#include <gtest/gtest.h>
#include <sys/mman.h>

#include <atomic>
#include <fstream>
#include <iterator>
#include <memory>
#include <string_view>
#include <thread>
#include <vector>

#include "pgproxy/admin/readiness.h"
#include "pgproxy/log/access_log.h"
#include "pgproxy/metrics/metrics.h"
#include "pgproxy/metrics/recorder.h"

namespace pgproxy {
namespace {

log::AccessRecord sample() {
  log::AccessRecord r;
  r.session = 7;
  r.client = "10.1.2.3:5555";
  r.mode = "passthrough";
  r.sni = "db\"1\".example.com";
  r.mapping = "db1.example.com";
  r.backend = "10.0.0.5:5432";
  r.duration_ms = 12;
  r.bytes_up = 100;
  r.bytes_down = 2000;
  r.outcome = "ok";
  return r;
}

TEST(AccessLog, TextFormat) {
  std::string line = log::formatAccess(sample(), log::AccessFormat::kText, 0);
  EXPECT_EQ(line,
            "1970-01-01T00:00:00.000Z access session=7 client=10.1.2.3:5555 mode=passthrough "
            "sni=\"db?1?.example.com\" mapping=\"db1.example.com\" backend=\"10.0.0.5:5432\" "
            "duration_ms=12 bytes_up=100 bytes_down=2000 outcome=ok");
  EXPECT_EQ(log::formatAccess(sample(), log::AccessFormat::kText, -1).rfind("access ", 0), 0u);
}

// A kernel-spliced session says so last; other sessions' lines are unchanged (no empty field).
TEST(AccessLog, SpliceFieldOnlyForKernelSplicedSessions) {
  log::AccessRecord r = sample();
  r.splice = "kernel";
  std::string text = log::formatAccess(r, log::AccessFormat::kText, -1);
  EXPECT_NE(text.find(" outcome=ok splice=kernel"), std::string::npos) << text;
  EXPECT_EQ(text.substr(text.size() - 14), " splice=kernel");
  std::string json = log::formatAccess(r, log::AccessFormat::kJson, 0);
  EXPECT_NE(json.find("\"outcome\":\"ok\",\"splice\":\"kernel\"}"), std::string::npos) << json;
  EXPECT_EQ(log::formatAccess(sample(), log::AccessFormat::kJson, 0).find("splice"),
            std::string::npos);
}

TEST(AccessLog, JsonFormatEscapes) {
  log::AccessRecord r = sample();
  std::string weird = std::string("a\\b\n\x01", 5);
  r.sni = weird;
  std::string line = log::formatAccess(r, log::AccessFormat::kJson, 1000);
  EXPECT_NE(line.find("\"sni\":\"a\\\\b\\n\\u0001\""), std::string::npos) << line;
  EXPECT_NE(line.find("\"time\":\"1970-01-01T00:00:01.000Z\""), std::string::npos);
  EXPECT_EQ(line.front(), '{');
  EXPECT_EQ(line.back(), '}');
}

class MetricsTest : public ::testing::Test {
 protected:
  void SetUp() override {
    mem_ = mmap(nullptr, metrics::Registry::bytesNeeded(), PROT_READ | PROT_WRITE,
                MAP_SHARED | MAP_ANONYMOUS, -1, 0);
    reg_ = std::make_unique<metrics::Registry>(static_cast<metrics::Shared*>(mem_));
  }
  void TearDown() override { munmap(mem_, metrics::Registry::bytesNeeded()); }
  void* mem_;
  std::unique_ptr<metrics::Registry> reg_;
};

// The master hands out worker slots; when none is left it is told so (no shared fallback slot
// whose gauges would drift).
TEST_F(MetricsTest, WorkerSlotsRunOutVisiblyAndFreeOnFold) {
  EXPECT_EQ(reg_->freeSlots(), metrics::kMaxSlots);
  std::vector<std::size_t> taken;
  for (std::size_t i = 0; i < metrics::kMaxSlots; ++i) {
    std::size_t s = reg_->reserveSlot(1);
    ASSERT_NE(s, metrics::Registry::kNoSlot);
    reg_->assignSlot(s, static_cast<std::int32_t>(1000 + i));
    taken.push_back(s);
  }
  EXPECT_EQ(reg_->freeSlots(), 0u);
  EXPECT_EQ(reg_->reserveSlot(1), metrics::Registry::kNoSlot);
  EXPECT_EQ(reg_->claimSlot(5000), nullptr);
  metrics::Recorder(reg_->slot(taken[7])).gauge(metrics::Gauge::kActive, 1);
  EXPECT_EQ(reg_->snapshot().gauges[0], 1);
  reg_->foldSlot(1007);  // that worker died: its slot is free again, its gauge gone
  EXPECT_EQ(reg_->freeSlots(), 1u);
  EXPECT_EQ(reg_->slotOwner(taken[7]), 0);
  EXPECT_EQ(reg_->snapshot().gauges[0], 0);
  std::size_t again = reg_->reserveSlot(1);
  EXPECT_EQ(again, taken[7]);
  reg_->releaseSlot(again);  // a fork that failed gives it back
  EXPECT_EQ(reg_->freeSlots(), 1u);
}

TEST_F(MetricsTest, FoldKeepsCountsAndNamesAreStable) {
  std::size_t a = reg_->registerMapping("a.example.com");
  EXPECT_EQ(a, 1u);
  EXPECT_EQ(reg_->registerMapping("a.example.com"), a);
  metrics::Recorder w1(reg_->claimSlot(101));
  metrics::Recorder w2(reg_->claimSlot(102));
  w1.add(metrics::Counter::kAccepted, 3);
  w2.add(metrics::Counter::kAccepted, 2);
  w1.closed(a, metrics::Outcome::kOk);
  w2.gauge(metrics::Gauge::kActive, 1);
  w1.observe(metrics::Histogram::kHandshake, 700);  // 0.7 ms
  auto before = reg_->snapshot();
  EXPECT_EQ(before.counters[0], 5u);
  reg_->foldSlot(101);
  reg_->foldSlot(102);  // died with an active connection: the gauge drops, counters stay
  auto after = reg_->snapshot();
  EXPECT_EQ(after.counters[0], 5u);
  EXPECT_EQ(after.mapping[a][static_cast<std::size_t>(metrics::MappingCounter::kClosedFirst)], 1u);
  EXPECT_EQ(after.gauges[0], 0);
  after.backends.push_back({0, "a.example.com", "10.0.0.2:5432", true, 111, 4});
  std::string text = metrics::renderPrometheus(after, "9.9");
  EXPECT_NE(text.find("pgproxy_backend_up{mapping=\"a.example.com\",backend=\"10.0.0.2:5432\"} 0"),
            std::string::npos);
  EXPECT_NE(text.find("pgproxy_backend_sessions_active{mapping=\"a.example.com\",backend=\"10.0.0."
                      "2:5432\"} 4"),
            std::string::npos);
  EXPECT_NE(text.find("pgproxy_connections_accepted_total 5\n"), std::string::npos);
  EXPECT_NE(
      text.find("pgproxy_connections_closed_total{mapping=\"a.example.com\",outcome=\"ok\"} 1"),
      std::string::npos);
  EXPECT_NE(text.find("pgproxy_handshake_duration_seconds_bucket{le=\"0.001\"} 1"),
            std::string::npos);
  EXPECT_NE(text.find("pgproxy_handshake_duration_seconds_bucket{le=\"0.0005\"} 0"),
            std::string::npos);
  EXPECT_NE(text.find("pgproxy_build_info{version=\"9.9\"} 1"), std::string::npos);
  for (const auto& m : metrics::metricTable()) {
    if (std::string_view(m.name).starts_with("pgproxy_pool_")) {
      continue;  // rendered by pool::SharedPools (shared_pools_test.cc)
    }
    EXPECT_NE(text.find(std::string("# HELP ") + m.name + " "), std::string::npos) << m.name;
  }
}

// A scrape while the master is in the middle of a fold (here: one that never ends, as when the
// master is descheduled between its two sequence increments) must not be rendered from a
// half-moved slot, and must not crash the worker that renders it.
TEST_F(MetricsTest, SnapshotDuringAFoldIsMarkedInconsistentAndRendersSafely) {
  std::size_t a = reg_->registerMapping("a.example.com");
  metrics::Recorder w(reg_->claimSlot(101));
  w.add(metrics::Counter::kAccepted, 3);
  w.closed(a, metrics::Outcome::kOk);
  reg_->shared()->fold_seq.store(1);  // a fold has begun
  metrics::Snapshot torn = reg_->snapshot();
  std::string text = metrics::renderPrometheus(torn, "9.9");
  EXPECT_FALSE(torn.consistent);
  ASSERT_EQ(torn.mapping_names.size(), 2u);
  EXPECT_EQ(torn.mapping.size(), torn.mapping_names.size());
  EXPECT_EQ(torn.mapping_active.size(), torn.mapping_names.size());
  EXPECT_NE(text.find("pgproxy_connections_closed_total{mapping=\"a.example.com\",outcome=\"ok\"}"),
            std::string::npos);
  // A snapshot whose vectors are shorter than its names renders what it has, no further.
  torn.mapping.clear();
  torn.mapping_active.resize(1);
  text = metrics::renderPrometheus(torn, "9.9");
  EXPECT_EQ(text.find("a.example.com"), std::string::npos);
  reg_->shared()->fold_seq.store(2);  // the fold ended
  metrics::Snapshot whole = reg_->snapshot();
  EXPECT_TRUE(whole.consistent);
  EXPECT_EQ(whole.counters[0], 3u);
  EXPECT_EQ(whole.mapping[a][static_cast<std::size_t>(metrics::MappingCounter::kClosedFirst)], 1u);
}

// Folds racing with snapshots: every consistent snapshot has all the counts moved so far, in the
// dead worker's slot or in `retired`, never in neither (a sum that would go back).
TEST_F(MetricsTest, ConsistentSnapshotsNeverSeeAHalfMovedSlot) {
  constexpr std::uint64_t kWorkers = 3000;
  std::size_t a = reg_->registerMapping("a.example.com");
  std::atomic<bool> done{false};
  std::thread master([&] {
    for (std::uint64_t i = 1; i <= kWorkers; ++i) {
      auto pid = static_cast<std::int32_t>(1000 + i);
      metrics::Recorder w(reg_->claimSlot(pid));
      w.add(a, metrics::MappingCounter::kBytesUp, 10);
      reg_->foldSlot(pid);  // the worker exited: its 10 bytes move to `retired`
    }
    done = true;
  });
  std::uint64_t last = 0;
  const auto up = static_cast<std::size_t>(metrics::MappingCounter::kBytesUp);
  while (!done) {
    metrics::Snapshot s = reg_->snapshot();
    if (s.consistent) {
      ASSERT_GE(s.mapping[a][up], last);
      last = s.mapping[a][up];
    }
  }
  master.join();
  metrics::Snapshot end = reg_->snapshot();
  ASSERT_TRUE(end.consistent);
  EXPECT_EQ(end.mapping[a][up], kWorkers * 10);
}

// Names keep their slots for the master's life; a configuration whose new names would not all
// get a slot of their own is refused (naming the limit) before any is registered.
TEST_F(MetricsTest, FitsCountsOnlyNewNamesAndNamesTheLimit) {
  auto names = [](const char* prefix, int from, int to) {
    std::vector<std::string> out;
    for (int i = from; i <= to; ++i) {
      out.push_back(prefix + std::to_string(i) + ".example.com");
    }
    return out;
  };
  auto first = names("a", 1, 100);
  ASSERT_TRUE(reg_->fits(first).ok());
  for (const auto& n : first) {
    ASSERT_NE(reg_->registerMapping(n), metrics::kUnknownMapping);
  }
  EXPECT_TRUE(reg_->fits(first).ok());  // the same names again: nothing new
  auto more = names("a", 1, 100);
  for (const auto& n : names("b", 1, 27)) {
    more.push_back(n);
  }
  EXPECT_TRUE(reg_->fits(more).ok());  // 127 names in all: the last slot
  more.push_back("c1.example.com");
  auto st = reg_->fits(more);
  ASSERT_FALSE(st.ok());
  EXPECT_NE(st.error().message.find("needs 28 new mapping name(s), and 100 of the 127 per-mapping "
                                    "slots"),
            std::string::npos)
      << st.error().message;
  // Removed names still hold their slots: 28 new names do not fit even without the old ones.
  EXPECT_FALSE(reg_->fits(names("d", 1, 28)).ok());
  EXPECT_TRUE(reg_->fits(names("d", 1, 27)).ok());
  for (const auto& n : names("d", 1, 27)) {
    EXPECT_NE(reg_->registerMapping(n), metrics::kUnknownMapping) << n;
  }
  EXPECT_EQ(reg_->registerMapping("e.example.com"), metrics::kUnknownMapping);  // full
  EXPECT_FALSE(reg_->fits({"e.example.com"}).ok());
  EXPECT_TRUE(reg_->fits({"d27.example.com", "a1.example.com"}).ok());
}

TEST_F(MetricsTest, ReadinessNamesMappingsWhoseBackendsAreAllDown) {
  auto cfg = config::loadString(
      "mappings:\n  - {external: a.example.com, internal: 10.0.0.1}\n"
      "  - external: b.example.com\n"
      "    backends: [{host: 10.0.0.2, port: 6000}, {host: 10.0.0.3}]\n",
      "t.yaml");
  ASSERT_TRUE(cfg.ok()) << cfg.error().message;
  reg_->master().serving.store(1);
  metrics::Snapshot s = reg_->snapshot();
  s.backends = {{0, "a.example.com", "10.0.0.1:5432", false, 0, 0},
                {1, "b.example.com", "10.0.0.2:6000", true, 111, 0},
                {1, "b.example.com", "10.0.0.3:5432", false, 0, 0}};
  EXPECT_TRUE(admin::readiness(s, *cfg).ready);  // one of b's two backends is enough
  s.backends[2].down = true;
  s.backends[2].last_errno = 110;
  auto r = admin::readiness(s, *cfg);
  EXPECT_FALSE(r.ready);
  ASSERT_EQ(r.reasons.size(), 1u);
  EXPECT_NE(r.reasons[0].find("mapping b.example.com: backend 10.0.0.2:6000 unreachable"),
            std::string::npos)
      << r.reasons[0];
  EXPECT_NE(r.reasons[0].find("backend 10.0.0.3:5432 unreachable"), std::string::npos);
  EXPECT_NE(r.json().find("\"status\":\"not ready\""), std::string::npos);
  reg_->master().serving.store(0);
  s = reg_->snapshot();
  EXPECT_FALSE(admin::readiness(s, *cfg).ready);
}

// The man page quotes /readyz's reasons as the code words them (they drifted apart once).
TEST_F(MetricsTest, ManPageQuotesTheReadinessReasons) {
  auto cfg = config::loadString("mappings:\n  - {external: a.example.com, internal: 10.0.0.1}\n",
                                "t.yaml");
  ASSERT_TRUE(cfg.ok()) << cfg.error().message;
  reg_->master().serving.store(0);
  metrics::Snapshot s = reg_->snapshot();
  s.backends = {{0, "a.example.com", "10.0.0.1:5432", true, 111, 0}};
  auto r = admin::readiness(s, *cfg);
  ASSERT_EQ(r.reasons.size(), 2u);
  std::ifstream in(std::string(PGPROXY_SRCDIR) + "/man/pgproxy.yaml.5");
  std::string man((std::istreambuf_iterator<char>(in)), std::istreambuf_iterator<char>());
  std::string text;  // troff without font changes and line breaks
  for (std::size_t i = 0; i < man.size(); ++i) {
    if (man.compare(i, 3, "\\fB") == 0 || man.compare(i, 3, "\\fR") == 0) {
      i += 2;
    } else {
      text += man[i] == '\n' ? ' ' : man[i];
    }
  }
  EXPECT_NE(text.find(r.reasons[0]), std::string::npos) << r.reasons[0];
  std::string generic = r.reasons[1];  // "mapping a.example.com: backend 10.0.0.1:5432 ..."
  generic.replace(generic.find("a.example.com"), 13, "NAME");
  generic.replace(generic.find("10.0.0.1:5432"), 13, "HOST:PORT");
  generic.replace(generic.find("(Connection refused"), std::string::npos, "(ERROR)");
  EXPECT_NE(text.find(generic), std::string::npos) << generic;
}

}  // namespace
}  // namespace pgproxy
