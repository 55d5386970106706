// The admin console's protocol (simple queries in, rows out) and its commands' executor, over
// real shared tables: what psql and the REST API get for each command.
#include "pgproxy/admin/console.h"

#include <gtest/gtest.h>

#include <csignal>
#include <fstream>
#include <iterator>
#include <optional>
#include <string>
#include <vector>

#include "admin_tables.h"
#include "pgproxy/admin/control.h"
#include "pgproxy/process/shared_regions.h"
#include "pgproxy/proto/wire.h"
#include "pgproxy/upstream/backend_table.h"

namespace pgproxy::admin {
namespace {

struct Message {
  char type;
  std::string body;
};

std::vector<Message> split(std::string_view wire) {
  std::vector<Message> out;
  while (wire.size() >= 5) {
    std::uint32_t len = proto::readU32(wire.data() + 1);
    out.push_back({wire[0], std::string(wire.substr(5, len - 4))});
    wire.remove_prefix(1 + len);
  }
  EXPECT_TRUE(wire.empty());
  return out;
}

std::string types(const std::vector<Message>& m) {
  std::string t;
  for (const auto& x : m) {
    t += x.type;
  }
  return t;
}

// The SQLSTATE field of an ErrorResponse body.
std::string sqlstate(const std::string& body) {
  std::size_t at = body.find(std::string("\0C", 2));
  return at == std::string::npos ? "" : body.substr(at + 2, 5);
}

std::string query(std::string_view sql) {
  return proto::buildMessage('Q', std::string(sql) + std::string(1, '\0'));
}

class ConsoleTest : public ::testing::Test {
 protected:
  void SetUp() override {
    tables_.load(R"(mappings:
  - external: a.example.com
    backends: [{ host: 10.0.0.1 }, { host: 10.0.0.2 }]
)");
  }
  CommandEnv env() {
    CommandEnv e;
    e.sources = tables_.sources();
    e.control = &*control_;
    e.signal_master = [this](int sig) {
      signals_.push_back(sig);
      return master_alive_;
    };
    e.who = "test";
    return e;
  }
  std::vector<Message> ask(Console& c, std::string_view sql) {
    std::string out;
    EXPECT_EQ(c.feed(query(sql), out), Console::Status::kOpen);
    return split(out);
  }

  AdminTables tables_;
  std::optional<metrics::Registry>& metrics_ = tables_.metrics;
  std::optional<Control>& control_ = tables_.control;
  std::vector<std::vector<std::size_t>>& slots_ = tables_.slots;
  std::vector<int> signals_;
  bool master_alive_ = true;
};

TEST_F(ConsoleTest, GreetingIsWhatPsqlWaitsFor) {
  auto m = split(Console::greeting("9.9"));
  ASSERT_FALSE(m.empty());
  EXPECT_EQ(m.front().type, 'R');
  EXPECT_EQ(m.front().body, std::string(4, '\0'));  // AuthenticationOk
  EXPECT_EQ(m.back().type, 'Z');
  EXPECT_EQ(m.back().body, "I");
  bool version = false;
  for (const auto& x : m) {
    version |= x.type == 'S' && x.body.rfind(std::string("server_version\0", 15), 0) == 0;
  }
  EXPECT_TRUE(version);
}

TEST_F(ConsoleTest, ShowAnswersRowsThenReadyForQuery) {
  Console c(env());
  auto m = ask(c, "show version;");
  EXPECT_EQ(types(m), "TDCZ");
  EXPECT_NE(m[1].body.find("pgproxy 9.9"), std::string::npos);
  EXPECT_EQ(types(ask(c, "SHOW BACKENDS")), "TDDCZ");
  EXPECT_EQ(types(ask(c, "  ; -- nothing\n")), "IZ");  // EmptyQueryResponse, as PostgreSQL
  auto bad = ask(c, "SELECT 1");
  EXPECT_EQ(types(bad), "EZ");
  EXPECT_EQ(sqlstate(bad[0].body), "42601");
  // Without a way to ask the workers, the lists say so rather than show nothing.
  auto alone = ask(c, "SHOW CLIENTS");
  EXPECT_EQ(types(alone), "EZ");
  EXPECT_EQ(sqlstate(alone[0].body), "58000");
}

TEST_F(ConsoleTest, MessagesSplitAnywhereAreReadWhole) {
  Console c(env());
  std::string wire = query("SHOW VERSION") + query("SHOW MAPPINGS");
  std::string out;
  for (char ch : wire) {
    ASSERT_EQ(c.feed(std::string_view(&ch, 1), out), Console::Status::kOpen);
  }
  EXPECT_EQ(types(split(out)), "TDCZTDCZ");
}

TEST_F(ConsoleTest, DisableAndDrainSetTheSharedSwitches) {
  Console c(env());
  EXPECT_EQ(types(ask(c, "DISABLE \"A.example.com\"")), "CZ");
  std::size_t a = metrics_->mappingIndex("a.example.com");
  EXPECT_TRUE(control_->disabled(a));
  EXPECT_EQ(types(ask(c, "enable a.example.com")), "CZ");
  EXPECT_FALSE(control_->disabled(a));
  auto none = ask(c, "DISABLE b.example.com");
  EXPECT_EQ(sqlstate(none[0].body), "42704");

  EXPECT_EQ(types(ask(c, "DRAIN BACKEND 10.0.0.2:5432")), "CZ");
  EXPECT_TRUE(control_->drained(slots_[0][1]));
  EXPECT_FALSE(control_->drained(slots_[0][0]));
  auto drained = view(capture(env().sources), Topic::kBackends);
  EXPECT_EQ(*drained.rows[1][6], "t");
  EXPECT_EQ(types(ask(c, "UNDRAIN BACKEND 10.0.0.2:5432")), "CZ");
  EXPECT_FALSE(control_->drained(slots_[0][1]));
  EXPECT_EQ(sqlstate(ask(c, "DRAIN BACKEND 10.0.0.9:5432")[0].body), "42704");
}

TEST_F(ConsoleTest, PauseTakesPooledMappingsOnly) {
  Console c(env());
  EXPECT_EQ(sqlstate(ask(c, "PAUSE")[0].body), "0A000");  // no mapping pools its clients
  EXPECT_EQ(sqlstate(ask(c, "PAUSE a.example.com")[0].body), "0A000");
  EXPECT_EQ(sqlstate(ask(c, "RESUME b.example.com")[0].body), "42704");
  EXPECT_FALSE(control_->paused(metrics_->mappingIndex("a.example.com")));
}

// A PAUSE that cannot be waited for is refused before its switch is set; one that can waits
// for what it polls, then answers.
TEST(ConsolePause, WaitsForWhatItPollsOrIsRefusedWhole) {
  AdminTables t;
  t.load(R"(auth: {type: trust}
mappings:
  - external: p.example.com
    internal: 10.0.0.1
    tls: terminate
    certificate: /nonexistent.pem
    key: /nonexistent.key
    pool: { mode: transaction }
)");
  CommandEnv env;
  env.sources = t.sources();
  env.control = &*t.control;
  const std::size_t index = t.metrics->mappingIndex("p.example.com");
  {
    Console c(env);
    std::string out;
    c.feed(query("PAUSE p.example.com"), out);
    auto m = split(out);
    ASSERT_EQ(types(m), "EZ");
    EXPECT_EQ(sqlstate(m[0].body), "58000");
    EXPECT_FALSE(t.control->paused(index));
  }
  std::function<bool()> ready;
  std::function<void()> done;
  env.poll_until = [&](std::function<bool()> r, std::function<void()> d) {
    ready = std::move(r);
    done = std::move(d);
    return std::unique_ptr<Poller>();
  };
  bool answered = false;
  Console c(env, [&](Gathered) { answered = true; });
  std::string out;
  EXPECT_EQ(c.feed(query("PAUSE p.example.com"), out), Console::Status::kWait);
  EXPECT_TRUE(t.control->paused(index));
  ASSERT_TRUE(ready);
  EXPECT_TRUE(ready());  // no server of the mapping is in a transaction
  done();
  EXPECT_TRUE(answered);
  EXPECT_EQ(c.resume(Gathered{}, out), Console::Status::kOpen);
  EXPECT_EQ(types(split(out)), "CZ");
  out.clear();
  EXPECT_EQ(c.feed(query("RESUME"), out), Console::Status::kOpen);
  EXPECT_EQ(types(split(out)), "CZ");
  EXPECT_FALSE(t.control->paused(index));
}

TEST_F(ConsoleTest, ReloadAndShutdownSignalTheMaster) {
  Console c(env());
  EXPECT_EQ(types(ask(c, "RELOAD")), "CZ");
  EXPECT_EQ(types(ask(c, "SHUTDOWN WAIT")), "CZ");
  EXPECT_EQ(types(ask(c, "SHUTDOWN")), "CZ");
  EXPECT_EQ(signals_, (std::vector<int>{SIGHUP, SIGQUIT, SIGTERM}));
  master_alive_ = false;
  auto gone = ask(c, "RELOAD");
  EXPECT_EQ(sqlstate(gone[0].body), "58000");
}

TEST_F(ConsoleTest, ExtendedProtocolIsRefusedUntilSync) {
  Console c(env());
  std::string batch = proto::buildMessage('P', std::string("\0SHOW VERSION\0\0\0", 16)) +
                      proto::buildMessage('B', std::string(8, '\0')) +
                      proto::buildMessage('E', std::string(5, '\0')) + query("SHOW VERSION") +
                      proto::buildMessage('S', "");
  std::string out;
  ASSERT_EQ(c.feed(batch, out), Console::Status::kOpen);
  auto m = split(out);
  EXPECT_EQ(types(m), "EZ");  // one error, the rest skipped up to Sync, as PostgreSQL does
  EXPECT_EQ(sqlstate(m[0].body), "0A000");
  EXPECT_EQ(types(ask(c, "SHOW VERSION")), "TDCZ");
}

TEST_F(ConsoleTest, TerminateAndBrokenMessagesEndTheSession) {
  {
    Console c(env());
    std::string out;
    EXPECT_EQ(c.feed(proto::buildMessage('X', ""), out), Console::Status::kClose);
    EXPECT_TRUE(out.empty());
  }
  {
    Console c(env());
    std::string out;
    EXPECT_EQ(c.feed(proto::buildMessage('?', "x"), out), Console::Status::kClose);
    auto m = split(out);
    ASSERT_EQ(types(m), "E");
    EXPECT_EQ(sqlstate(m[0].body), "08P01");
  }
  {
    Console c(env());
    std::string out;
    std::string huge("Q\x7f\xff\xff\xff", 5);  // 2 GiB announced: refused before any is read
    EXPECT_EQ(c.feed(huge, out), Console::Status::kClose);
    EXPECT_EQ(sqlstate(split(out)[0].body), "08P01");
    out.clear();
    EXPECT_EQ(c.feed(query("SHOW VERSION"), out), Console::Status::kClose);
    EXPECT_TRUE(out.empty());
  }
  {
    Console c(env());
    std::string out;
    EXPECT_EQ(c.feed(std::string("Q\0\0\0\x03", 5), out), Console::Status::kClose);
    EXPECT_EQ(sqlstate(split(out)[0].body), "08P01");
  }
}

// The man page's ADMIN CONSOLE section documents every command and topic of the parser's table
// and every column of every view: one cannot be added without the other.
TEST(ConsoleDocs, TheManPageHasEveryCommandTopicAndColumn) {
  std::ifstream in(std::string(PGPROXY_SRCDIR) + "/man/pgproxy.8");
  std::string man((std::istreambuf_iterator<char>(in)), std::istreambuf_iterator<char>());
  std::size_t from = man.find(".SH ADMIN CONSOLE"), to = man.find(".SH REST API");
  ASSERT_NE(from, std::string::npos);
  ASSERT_NE(to, std::string::npos);
  std::string section = man.substr(from, to - from);
  for (const CommandSpec& c : commands()) {
    EXPECT_NE(section.find("\\fB" + std::string(c.keyword) + "\\fR"), std::string::npos)
        << c.keyword;
  }
  LiveState empty;
  for (const TopicSpec& t : topics()) {
    EXPECT_NE(section.find("\\fBSHOW " + std::string(t.keyword) + "\\fR"), std::string::npos)
        << t.keyword;
    for (const Column& c : view(empty, t.topic).columns) {
      EXPECT_NE(section.find("\\fB" + std::string(c.name) + "\\fR"), std::string::npos)
          << t.keyword << " " << c.name;
    }
  }
}

}  // namespace
}  // namespace pgproxy::admin
