// The admin views: captured from real shared tables (the master's memfd regions), turned into
// typed tables, and rendered as console rows and as JSON from the same table.
#include "pgproxy/admin/live_state.h"

#include <gtest/gtest.h>

#include <string>
#include <string_view>
#include <vector>

#include "admin_tables.h"
#include "pgproxy/admin/control.h"
#include "pgproxy/process/shared_regions.h"
#include "pgproxy/proto/wire.h"
#include "pgproxy/upstream/backend_table.h"

namespace pgproxy::admin {
namespace {

const char* kConfig = R"(listen:
  port: 5400
admin:
  listen: 127.0.0.1:9540
  token: s3cret
mappings:
  - external: a.example.com
    backends: [{ host: 10.0.0.1 }, { host: 10.0.0.2, port: 5433, weight: 3 }]
    max_connections: 10
  - external: b.example.com
    internal: 10.0.0.3
    tls: terminate
    certificate: /etc/ssl/b.pem
    key: /etc/ssl/b.key
    pool: { mode: transaction }
    health_check: { user: checker }
    read_write_split: true
    routes: [{ match: { database: "app_*" } }, { match: { user: report } }]
auth:
  type: trust
max_connections: 100
)";

// The regions as the master makes them, with the configuration registered as it registers it.
class LiveStateTest : public ::testing::Test {
 protected:
  void SetUp() override { tables_.load(kConfig); }
  Sources sources() { return tables_.sources(); }
  // The column `name` of every row.
  static std::vector<std::string> column(const View& v, std::string_view name) {
    std::size_t c = 0;
    while (c < v.columns.size() && v.columns[c].name != name) {
      ++c;
    }
    std::vector<std::string> out;
    for (const auto& row : v.rows) {
      out.push_back(c < row.size() && row[c] ? *row[c] : "NULL");
    }
    return out;
  }

  AdminTables tables_;
  config::Config& cfg_ = tables_.cfg;
  std::optional<process::SharedRegions>& regions_ = tables_.regions;
  std::optional<metrics::Registry>& metrics_ = tables_.metrics;
  std::optional<upstream::BackendTable>& backends_ = tables_.backends;
  std::optional<pool::SharedPools>& pools_ = tables_.pools;
  std::optional<Control>& control_ = tables_.control;
  std::vector<std::vector<std::size_t>>& slots_ = tables_.slots;
};

TEST_F(LiveStateTest, BackendsShowHealthDrainAndTheLastError) {
  std::size_t second = slots_[0][1];
  backends_->recordFailure(second, 1, 111, "connect: Connection refused");
  control_->setDrained(slots_[0][0], true);
  backends_->addActive(slots_[1][0], 2);
  backends_->noteCheck(slots_[1][0], 1'700'000'000'123);
  backends_->setLag(slots_[0][1], 2500);
  View v = view(capture(sources()), Topic::kBackends);
  EXPECT_EQ(column(v, "mapping"),
            (std::vector<std::string>{"a.example.com", "a.example.com", "b.example.com"}));
  EXPECT_EQ(column(v, "port"), (std::vector<std::string>{"5432", "5433", "5432"}));
  EXPECT_EQ(column(v, "state"), (std::vector<std::string>{"unknown", "down", "unknown"}));
  EXPECT_EQ(column(v, "weight"), (std::vector<std::string>{"1", "3", "1"}));
  EXPECT_EQ(column(v, "drained"), (std::vector<std::string>{"t", "f", "f"}));
  EXPECT_EQ(column(v, "active_sessions"), (std::vector<std::string>{"0", "0", "2"}));
  EXPECT_EQ(column(v, "last_check"),
            (std::vector<std::string>{"NULL", "NULL", "2023-11-14 22:13:20.123+00"}));
  EXPECT_EQ(column(v, "last_error"),
            (std::vector<std::string>{"NULL", "connect: Connection refused", "NULL"}));
  EXPECT_EQ(column(v, "replica_lag_ms"), (std::vector<std::string>{"NULL", "2500", "NULL"}));
  // Undrained, it is balanced again; the flag is shared, so every reader sees it at once.
  EXPECT_TRUE(control_->setDrained(slots_[0][0], false));
  EXPECT_EQ(column(view(capture(sources()), Topic::kBackends), "drained")[0], "f");
}

TEST_F(LiveStateTest, MappingsAndLimitsCountTheSameSessions) {
  metrics::Slot* slot = metrics_->claimSlot(4242);
  ASSERT_NE(slot, nullptr);
  std::size_t a = metrics_->mappingIndex("a.example.com");
  slot->mapping_active[a].store(3);
  slot->mapping_admitted[a].store(2);
  slot->gauges[static_cast<std::size_t>(metrics::Gauge::kAdmitted)].store(2);
  control_->setDisabled(metrics_->mappingIndex("b.example.com"), true);
  LiveState s = capture(sources());
  View m = view(s, Topic::kMappings);
  EXPECT_EQ(column(m, "name"), (std::vector<std::string>{"a.example.com", "b.example.com"}));
  EXPECT_EQ(column(m, "tls"), (std::vector<std::string>{"passthrough", "terminate"}));
  EXPECT_EQ(column(m, "pool_mode"), (std::vector<std::string>{"NULL", "transaction"}));
  EXPECT_EQ(column(m, "disabled"), (std::vector<std::string>{"f", "t"}));
  EXPECT_EQ(column(m, "backends"), (std::vector<std::string>{"2", "1"}));
  EXPECT_EQ(column(m, "current_connections"), (std::vector<std::string>{"2", "0"}));
  EXPECT_EQ(column(m, "max_connections"), (std::vector<std::string>{"10", "NULL"}));
  EXPECT_EQ(column(m, "routes"), (std::vector<std::string>{"0", "2"}));
  EXPECT_EQ(column(m, "read_write_split"), (std::vector<std::string>{"f", "t"}));
  View l = view(s, Topic::kLimits);
  EXPECT_EQ(column(l, "scope"), (std::vector<std::string>{"*", "a.example.com", "b.example.com"}));
  EXPECT_EQ(column(l, "max_connections"), (std::vector<std::string>{"100", "10", "NULL"}));
  EXPECT_EQ(column(l, "current_connections"), (std::vector<std::string>{"2", "2", "0"}));
}

TEST_F(LiveStateTest, PoolsAndStatsAddUpPerMapping) {
  pool::SharedPools worker(static_cast<pool::PoolsShared*>(regions_->pools()));
  worker.attach(0);
  std::size_t p1 = worker.openPool("b.example.com", "10.0.0.3:5432", "app", "db1");
  std::size_t p2 = worker.openPool("b.example.com", "10.0.0.3:5432", "app", "db2");
  ASSERT_NE(p1, pool::kNoPool);
  ASSERT_NE(p2, pool::kNoPool);
  ASSERT_TRUE(worker.tryAddServer(p1, 5, pool::kNoPool, 0));
  worker.moveServer(p1, pool::ServerState::kLogin, pool::ServerState::kActive);
  ASSERT_TRUE(worker.tryAddServer(p2, 5, pool::kNoPool, 0));
  worker.moveServer(p2, pool::ServerState::kLogin, pool::ServerState::kIdle);
  worker.addWaiting(p1, 2);
  for (int i = 0; i < 3; ++i) {
    worker.countTransaction(p1);
    worker.countQuery(p1);
  }
  worker.countTransaction(p2);
  worker.observeWait(p1, 300);
  worker.observeWait(p2, 100);
  LiveState s = capture(sources());
  View pools = view(s, Topic::kPools);
  EXPECT_EQ(pools.rows.size(), 2u);
  EXPECT_EQ(column(pools, "sv_active"), (std::vector<std::string>{"1", "0"}));
  EXPECT_EQ(column(pools, "sv_idle"), (std::vector<std::string>{"0", "1"}));
  EXPECT_EQ(column(pools, "cl_waiting"), (std::vector<std::string>{"2", "0"}));
  EXPECT_EQ(column(pools, "pool_mode"), (std::vector<std::string>{"transaction", "transaction"}));
  View stats = view(s, Topic::kStats);
  EXPECT_EQ(column(stats, "total_xact_count"), (std::vector<std::string>{"0", "4"}));
  EXPECT_EQ(column(stats, "total_query_count"), (std::vector<std::string>{"0", "3"}));
  EXPECT_EQ(column(stats, "total_wait_time"), (std::vector<std::string>{"0", "400"}));
  // The averages are the master's, per second over its last stats period.
  EXPECT_EQ(column(stats, "avg_xact_count"), (std::vector<std::string>{"0", "0"}));
  control_->setRates(metrics_->mappingIndex("b.example.com"), MappingRates{7, 9, 100, 200, 250});
  View again = view(capture(sources()), Topic::kStats);
  EXPECT_EQ(column(again, "avg_xact_count"), (std::vector<std::string>{"0", "7"}));
  EXPECT_EQ(column(again, "avg_query_count"), (std::vector<std::string>{"0", "9"}));
  EXPECT_EQ(column(again, "avg_recv"), (std::vector<std::string>{"0", "100"}));
  EXPECT_EQ(column(again, "avg_wait_time"), (std::vector<std::string>{"0", "250"}));
}

TEST_F(LiveStateTest, GenerationsAreTheMastersHistoryNewestFirst) {
  std::vector<GenerationInfo> history;
  for (int g = 1; g <= 20; ++g) {  // more than the shared ring keeps
    GenerationInfo info;
    info.generation = g;
    info.state = g == 20 ? "serving" : "ended";
    info.workers = g == 20 ? 2 : 0;
    info.config_hash = "hash" + std::to_string(g);
    info.started_ms = 1'700'000'000'000 + g;
    history.push_back(info);
  }
  GenerationInfo refused;
  refused.state = "refused";
  refused.detail = "test.yaml:3:1: unknown key \"nope\"";
  refused.started_ms = 1'700'000'000'100;
  history.push_back(refused);
  control_->publishGenerations(history);
  auto back = control_->generations();
  ASSERT_EQ(back.size(), kGenerationHistory);
  EXPECT_EQ(back[0], refused);
  EXPECT_EQ(back[1], history[19]);
  EXPECT_EQ(back.back().generation, 6);
  View v = view(capture(sources()), Topic::kGenerations);
  ASSERT_EQ(v.rows.size(), kGenerationHistory);
  EXPECT_EQ(column(v, "generation")[0], "NULL");  // the reload that made no generation
  EXPECT_EQ(column(v, "state")[0], "refused");
  EXPECT_EQ(column(v, "detail")[0], refused.detail);
  EXPECT_EQ(column(v, "generation")[1], "20");
  EXPECT_EQ(column(v, "workers")[1], "2");
  // A shorter history replaces a longer one whole.
  control_->publishGenerations({history[0]});
  EXPECT_EQ(control_->generations(), std::vector<GenerationInfo>{history[0]});
}

TEST(LiveStateRates, PerSecondBetweenTwoSamples) {
  MappingTotals before{"m", 100, 300, 1000, 5000, 400, 4, 10};
  MappingTotals now{"m", 250, 600, 2500, 5000, 1000, 7, 12};
  MappingRates r = ratesBetween(before, now, 15.0);
  EXPECT_EQ(r, (MappingRates{10, 20, 100, 0, 200}));
  // A counter that went back (the mapping removed and added again): 0, never a wrap.
  MappingTotals reset{"m", 5, 5, 5, 5, 5, 5, 5};
  EXPECT_EQ(ratesBetween(before, reset, 15.0), MappingRates{});
  EXPECT_EQ(ratesBetween(before, now, 0.0).xact, 0u);
}

TEST_F(LiveStateTest, ConfigIsFlattenedWithSecretsRedacted) {
  View v = view(capture(sources()), Topic::kConfig);
  // Read for the views that show them only.
  EXPECT_TRUE(capture(sources(), Topic::kBackends).config.empty());
  EXPECT_EQ(capture(sources(), Topic::kConfig).config.size(), v.rows.size());
  std::vector<std::string> keys = column(v, "key"), values = column(v, "value");
  auto value = [&](std::string_view key) {
    for (std::size_t i = 0; i < keys.size(); ++i) {
      if (keys[i] == key) {
        return values[i];
      }
    }
    return std::string("missing");
  };
  EXPECT_EQ(value("listen.port"), "5400");
  EXPECT_EQ(value("admin.token"), "(redacted)");
  EXPECT_EQ(value("mappings[0].backends[1].weight"), "3");
  EXPECT_EQ(value("mappings[1].pool.mode"), "transaction");
  EXPECT_EQ(cfg_.text.find("s3cret") != std::string::npos, true);
  for (const std::string& val : values) {
    EXPECT_EQ(val.find("s3cret"), std::string::npos);
  }
  EXPECT_TRUE(flattenConfig("{ unclosed").empty());
  EXPECT_TRUE(flattenConfig("").empty());
}

// The console's rows and the API's objects come from one table: the same names and values.
TEST(LiveStateRender, RowsAndJsonSayTheSame) {
  View v{{{"name", ColumnType::kText},
          {"n", ColumnType::kInt8},
          {"on", ColumnType::kBool},
          {"at", ColumnType::kTimestamp}},
         {{std::string("a\"b\n"), std::string("42"), std::string("t"), std::nullopt},
          {std::string(""), std::string("-1"), std::string("f"),
           std::string("2026-01-02 03:04:05.678+00")}}};
  EXPECT_EQ(renderJson(v), R"([{"name":"a\"b\n","n":42,"on":true,"at":null},)"
                           R"({"name":"","n":-1,"on":false,"at":"2026-01-02T03:04:05.678Z"}])");
  EXPECT_EQ(renderJson(View{{{"x", ColumnType::kText}}, {}}), "[]");

  std::string wire = renderRows(v);
  // RowDescription: 4 columns, each name then oid at +6 from its end.
  ASSERT_EQ(wire[0], 'T');
  std::uint32_t len = proto::readU32(wire.data() + 1);
  std::string_view desc(wire.data() + 5, len - 4);
  EXPECT_EQ(desc[0], 0);
  EXPECT_EQ(desc[1], 4);
  std::size_t at = 2;
  std::vector<std::uint32_t> oids;
  for (int c = 0; c < 4; ++c) {
    at = desc.find('\0', at) + 1;
    oids.push_back(proto::readU32(desc.data() + at + 6));
    at += 18;
  }
  EXPECT_EQ(at, desc.size());
  EXPECT_EQ(oids, (std::vector<std::uint32_t>{25, 20, 16, 1184}));
  // Two DataRows, the NULL as length -1, then CommandComplete "SHOW".
  std::size_t pos = 1 + len;
  std::vector<char> types;
  while (pos < wire.size()) {
    types.push_back(wire[pos]);
    pos += 1 + proto::readU32(wire.data() + pos + 1);
  }
  EXPECT_EQ(pos, wire.size());
  EXPECT_EQ(types, (std::vector<char>{'D', 'D', 'C'}));
  EXPECT_NE(wire.find(std::string("\xff\xff\xff\xff", 4)), std::string::npos);
  EXPECT_EQ(wire.substr(wire.size() - 5), std::string("SHOW\0", 5));
}

TEST(LiveStateRender, EveryTopicTheConsoleTakesHasAView) {
  LiveState s;
  for (const TopicSpec& t : topics()) {
    View v = view(s, t.topic);
    EXPECT_FALSE(v.columns.empty()) << t.keyword;
    EXPECT_EQ(sharedTopic(t.topic), t.topic != Topic::kClients && t.topic != Topic::kServers);
  }
}

}  // namespace
}  // namespace pgproxy::admin
