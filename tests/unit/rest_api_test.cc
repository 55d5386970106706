// The REST API's routing, statuses and bodies over real shared tables, and its OpenAPI document
// made from the same views.
#include "pgproxy/admin/rest_api.h"

#include <gtest/gtest.h>

#include <csignal>
#include <optional>
#include <string>
#include <vector>

#include "admin_tables.h"
#include "pgproxy/admin/control.h"
#include "pgproxy/process/shared_regions.h"
#include "pgproxy/upstream/backend_table.h"

namespace pgproxy::admin {
namespace {

using Method = ApiRequest::Method;

class RestApiTest : public ::testing::Test {
 protected:
  void SetUp() override {
    tables_.load("mappings:\n  - external: a.example.com\n    backends: [{ host: 10.0.0.1 }]\n",
                 "/etc/pgproxy/pgproxy.yaml");
    env_.commands.sources = tables_.sources();
    env_.commands.control = &*control_;
    env_.commands.signal_master = [this](int sig) {
      signals_.push_back(sig);
      return true;
    };
    env_.config_path = "/etc/pgproxy/pgproxy.yaml";
    env_.validate = [this](const std::string& text) -> base::Status {
      auto c = config::loadString(text, env_.config_path);
      if (!c) {
        return c.error();
      }
      return {};
    };
    env_.write_config = [this](const std::string& text) -> base::Status {
      written_ = text;
      return {};
    };
  }
  ApiResponse call(Method m, const std::string& path, const std::string& body = "",
                   bool token = true) {
    ApiRequest r;
    r.method = m;
    std::size_t q = path.find('?');
    r.path = path.substr(0, q);
    r.query = q == std::string::npos ? "" : path.substr(q + 1);
    r.body = body;
    r.token_configured = token;
    r.authorized = token;
    return handleApi(r, env_);
  }

  AdminTables tables_;
  std::optional<metrics::Registry>& metrics_ = tables_.metrics;
  std::optional<Control>& control_ = tables_.control;
  std::vector<std::vector<std::size_t>>& slots_ = tables_.slots;
  ApiEnv env_;
  std::vector<int> signals_;
  std::string written_;
};

TEST_F(RestApiTest, GetsAreTheConsolesViewsAsJson) {
  auto r = call(Method::kGet, "/backends");
  EXPECT_EQ(r.status, 200);
  EXPECT_EQ(r.body.rfind("{\"backends\":[{\"mapping\":\"a.example.com\",\"host\":\"10.0.0.1\","
                         "\"port\":5432,\"state\":\"unknown\"",
                         0),
            0u)
      << r.body;
  EXPECT_EQ(call(Method::kGet, "/mappings").status, 200);
  EXPECT_EQ(call(Method::kGet, "/version").body, "{\"version\":[{\"version\":\"pgproxy 9.9\"}]}");
  EXPECT_EQ(call(Method::kGet, "/clients").status, 503);  // no way to ask the workers here
  EXPECT_EQ(call(Method::kGet, "/nothing").status, 404);
  auto wrong = call(Method::kPost, "/backends");
  EXPECT_EQ(wrong.status, 405);
  EXPECT_EQ(wrong.allow, "GET, HEAD");
}

TEST_F(RestApiTest, PostsRunTheConsolesCommands) {
  auto r = call(Method::kPost, "/backends/10.0.0.1:5432/drain");
  EXPECT_EQ(r.status, 200) << r.body;
  EXPECT_EQ(r.body, "{\"result\":\"DRAIN BACKEND\"}");
  EXPECT_TRUE(control_->drained(slots_[0][0]));
  EXPECT_EQ(call(Method::kPost, "/backends/10.0.0.1:5432/undrain").status, 200);
  EXPECT_FALSE(control_->drained(slots_[0][0]));
  EXPECT_EQ(call(Method::kPost, "/mappings/a.example.com/disable").status, 200);
  EXPECT_TRUE(control_->disabled(metrics_->mappingIndex("a.example.com")));
  auto missing = call(Method::kPost, "/mappings/b.example.com/disable");
  EXPECT_EQ(missing.status, 404);
  EXPECT_NE(missing.body.find("\"sqlstate\":\"42704\""), std::string::npos);
  EXPECT_EQ(call(Method::kPost, "/mappings/a.example.com/pause").status, 501);
  EXPECT_EQ(call(Method::kPost, "/reload").status, 200);
  EXPECT_EQ(call(Method::kPost, "/shutdown?wait=true").status, 200);
  EXPECT_EQ(signals_, (std::vector<int>{SIGHUP, SIGQUIT}));
  EXPECT_EQ(call(Method::kGet, "/reload").status, 405);
  // Without a token configured nothing changes over HTTP.
  auto open = call(Method::kPost, "/reload", "", false);
  EXPECT_EQ(open.status, 403);
  EXPECT_EQ(signals_.size(), 2u);
}

TEST_F(RestApiTest, PutConfigValidatesWritesAndReloads) {
  EXPECT_EQ(call(Method::kPut, "/config", "mappings: []\n").status, 403);  // not allowed
  env_.allow_config_write = true;
  auto bad = call(Method::kPut, "/config", "listen:\n  port: 99999\nmappings: []\n");
  EXPECT_EQ(bad.status, 422) << bad.body;
  EXPECT_NE(bad.body.find("\"line\":2,\"column\":9"), std::string::npos) << bad.body;
  EXPECT_TRUE(written_.empty());
  EXPECT_TRUE(signals_.empty());
  std::string good = "mappings:\n  - external: b.example.com\n    internal: 10.0.0.2\n";
  auto ok = call(Method::kPut, "/config", good);
  EXPECT_EQ(ok.status, 200) << ok.body;
  EXPECT_EQ(written_, good);
  EXPECT_EQ(signals_, (std::vector<int>{SIGHUP}));
  EXPECT_EQ(call(Method::kPut, "/config", "").status, 400);
  EXPECT_EQ(call(Method::kPut, "/config", good, false).status, 403);
}

// Lists and KILLs wait for the workers: the response says what to ask, and the answer keeps the
// workers that were missing.
TEST_F(RestApiTest, WorkerAnswersAreRenderedWithTheMissingOnes) {
  env_.commands.ask_workers = [](const ControlRequest&, ControlGather::Done) {
    return std::unique_ptr<ControlGather>();
  };
  auto pending = call(Method::kGet, "/clients");
  ASSERT_TRUE(pending.ask.has_value());
  EXPECT_EQ(pending.ask->kind, ControlKind::kClients);
  Gathered g;
  ControlReply part;
  std::vector<Cell> row(clientColumns().size());
  row[0] = std::string("7");
  row[2] = std::string("a.example.com");
  part.rows.push_back(row);
  g.parts.push_back(part);
  g.missing.push_back({4, 4444, "no answer before the deadline (stopped or stuck)"});
  auto done = completeApi(pending, g);
  EXPECT_EQ(done.status, 200);
  EXPECT_EQ(
      done.body.rfind("{\"clients\":[{\"id\":7,\"worker\":null,\"mapping\":\"a.example.com\"", 0),
      0u)
      << done.body;
  EXPECT_NE(done.body.find("\"missing\":[{\"slot\":4,\"pid\":4444,"), std::string::npos);

  auto kill = call(Method::kPost, "/mappings/a.example.com/kill");
  ASSERT_TRUE(kill.ask.has_value());
  EXPECT_EQ(kill.ask->kind, ControlKind::kKillMapping);
  EXPECT_EQ(kill.ask->name, "a.example.com");
  Gathered killed;
  ControlReply two;
  two.rows = {{std::string("2")}};
  killed.parts = {two, two};
  auto result = completeApi(kill, killed);
  EXPECT_EQ(result.body, "{\"result\":\"KILL\",\"notices\":[\"4 session(s) closed\"]}");
  EXPECT_EQ(call(Method::kPost, "/mappings/b.example.com/kill").status, 404);
  auto client = call(Method::kPost, "/clients/10000000003/kill");
  ASSERT_TRUE(client.ask.has_value());
  EXPECT_EQ(client.ask->number, 10000000003ull);
  EXPECT_EQ(completeApi(client, Gathered{}).status, 404);  // no worker had it
}

TEST_F(RestApiTest, ClientsComeInPagesByID) {
  env_.commands.ask_workers = [](const ControlRequest&, ControlGather::Done) {
    return std::unique_ptr<ControlGather>();
  };
  auto first = call(Method::kGet, "/clients?limit=2");
  ASSERT_TRUE(first.ask.has_value());
  EXPECT_EQ(first.ask->limit, 3u);  // one more than the page: whether there is a next
  EXPECT_EQ(first.page, 2u);
  EXPECT_EQ(first.ask->number, 0u);
  // Two workers each sent their lowest two: the page is the lowest two of all four.
  Gathered g;
  for (const char* ids : {"30 10", "20 40"}) {
    ControlReply part;
    std::string a(ids, 2), b(ids + 3, 2);
    for (const std::string& id : {a, b}) {
      std::vector<Cell> row(clientColumns().size());
      row[0] = id;
      part.rows.push_back(row);
    }
    g.parts.push_back(part);
  }
  auto page = completeApi(first, g);
  EXPECT_EQ(page.status, 200);
  EXPECT_EQ(page.body.find("\"id\":30"), std::string::npos) << page.body;
  EXPECT_NE(page.body.find("\"id\":10"), std::string::npos);
  EXPECT_NE(page.body.find("\"id\":20"), std::string::npos);
  EXPECT_TRUE(page.body.ends_with(",\"next\":20}")) << page.body;
  auto second = call(Method::kGet, "/clients?after=20&limit=2");
  EXPECT_EQ(second.ask->number, 20u);
  EXPECT_EQ(call(Method::kGet, "/clients").page, 1000u);
  EXPECT_EQ(call(Method::kGet, "/clients?limit=0").status, 400);
  EXPECT_EQ(call(Method::kGet, "/clients?limit=10001").status, 400);
  EXPECT_EQ(call(Method::kGet, "/clients?after=-1").status, 400);
  EXPECT_EQ(call(Method::kGet, "/clients?after=x").status, 400);
}

TEST(RestApiErrors, ConfigErrorsKeepTheirPositions) {
  EXPECT_EQ(configErrorsJson("/x.yaml:3:7: bad key\nno position here", "/x.yaml"),
            "[{\"line\":3,\"column\":7,\"message\":\"bad key\"},"
            "{\"line\":0,\"column\":0,\"message\":\"no position here\"}]");
  EXPECT_EQ(configErrorsJson("", "/x.yaml"), "[]");
  EXPECT_EQ(configErrorsJson("/x.yaml:zz: odd", "/x.yaml"),
            "[{\"line\":0,\"column\":0,\"message\":\"/x.yaml:zz: odd\"}]");
}

// Every view's columns are in the document, with the JSON type the response uses.
TEST(RestApiDocument, DescribesEveryViewsColumns) {
  std::string doc = openApiDocument("9.9");
  EXPECT_EQ(doc.rfind("{\"openapi\":\"3.0.3\"", 0), 0u);
  LiveState empty;
  for (const TopicSpec& t : topics()) {
    std::string name(t.keyword);
    for (char& c : name) {
      c = static_cast<char>(std::tolower(static_cast<unsigned char>(c)));
    }
    EXPECT_NE(doc.find("\"/api/v1/" + name + "\""), std::string::npos) << name;
    for (const Column& c : view(empty, t.topic).columns) {
      std::string type = c.type == ColumnType::kInt8   ? "integer"
                         : c.type == ColumnType::kBool ? "boolean"
                                                       : "string";
      EXPECT_NE(doc.find("\"" + std::string(c.name) + "\":{\"type\":\"" + type + "\""),
                std::string::npos)
          << c.name;
    }
  }
  EXPECT_NE(doc.find("\"/api/v1/backends/{backend}/drain\""), std::string::npos);
}

}  // namespace
}  // namespace pgproxy::admin
