// The plugin host's pure parts and its Lua states: the query gate's framing, shared counters,
// loading errors, hook answers, and the instruction budget and memory cap.
#include "pgproxy/plugin/host.h"

#include <gtest/gtest.h>
#include <stdlib.h>
#include <unistd.h>

#include <fstream>
#include <string>

#include "pgproxy/config/config.h"
#include "pgproxy/plugin/query_gate.h"
#include "pgproxy/proto/wire.h"

namespace pgproxy::plugin {
namespace {

std::string query(std::string_view sql) {
  std::string body(sql);
  body.push_back('\0');
  return proto::buildMessage('Q', body);
}

std::string parse(std::string_view name, std::string_view sql) {
  std::string body(name);
  body.push_back('\0');
  body.append(sql);
  body.push_back('\0');
  body.append("\0\0", 2);  // no parameter types
  return proto::buildMessage('P', body);
}

TEST(QueryGate, HoldsQueriesUntilWholeAndStreamsTheRest) {
  QueryGate gate;
  std::string seen;
  auto check = [&](char type, std::string_view sql, std::string&) {
    seen += type;
    seen += ":" + std::string(sql) + ";";
    return true;
  };
  std::string stream = query("select 1") + proto::buildMessage('d', "copy data") +
                       parse("s1", "select $1") + proto::buildMessage('S', "");
  // Byte by byte: the same output as all at once.
  std::string out;
  for (char c : stream) {
    ASSERT_EQ(gate.feed(std::string_view(&c, 1), out, check), QueryGate::Result::kOk);
  }
  EXPECT_EQ(out, stream);
  EXPECT_EQ(seen, "Q:select 1;P:select $1;");
  // A COPY's data streams through before its message is whole.
  QueryGate g2;
  std::string copy = proto::buildMessage('d', std::string(100, 'x'));
  out.clear();
  ASSERT_EQ(g2.feed(std::string_view(copy).substr(0, 50), out, check), QueryGate::Result::kOk);
  EXPECT_EQ(out, copy.substr(0, 50));
}

TEST(QueryGate, AnnotatesStopsAndRefusesWhatItCannotCheck) {
  auto note = [](char, std::string_view, std::string& n) {
    n = "app=x */ drop /* y";
    return true;
  };
  QueryGate gate;
  std::string out;
  ASSERT_EQ(gate.feed(query("select 1") + parse("n", "select 2"), out, note),
            QueryGate::Result::kOk);
  EXPECT_EQ(out, query("/* app=x * / drop / * y */ select 1") +
                     parse("n", "/* app=x * / drop / * y */ select 2"));
  auto stop = [](char, std::string_view sql, std::string&) { return sql != "drop table t"; };
  QueryGate g2;
  out.clear();
  EXPECT_EQ(g2.feed(query("select 1") + query("drop table t") + query("select 2"), out, stop),
            QueryGate::Result::kStopped);
  EXPECT_EQ(out, query("select 1"));  // nothing from the refused message on
  QueryGate g3;
  std::string huge = "Q";
  proto::appendU32(huge, QueryGate::kMaxHeld + 1);
  EXPECT_EQ(g3.feed(huge, out, note), QueryGate::Result::kTooLarge);
  QueryGate g4;
  EXPECT_EQ(g4.feed(std::string("Q\0\0\0\3", 5), out, note), QueryGate::Result::kBad);
}

class HostTest : public ::testing::Test {
 protected:
  void SetUp() override {
    char tmpl[] = "/tmp/pgproxy-plugin-unit-XXXXXX";
    ASSERT_NE(mkdtemp(tmpl), nullptr);
    dir_ = tmpl;
    table_ = std::make_unique<metrics::PluginCounter[]>(metrics::kMaxPluginCounters);
  }
  void TearDown() override { EXPECT_EQ(std::system(("rm -rf " + dir_).c_str()), 0); }
  base::Result<std::shared_ptr<Host>> load(const std::string& lua, unsigned instructions = 100000,
                                           std::uint64_t memory = 4 << 20) {
    std::ofstream(dir_ + "/p.lua") << lua;
    config::Config cfg;
    cfg.path = dir_ + "/pgproxy.yaml";
    config::PluginConfig pc;
    pc.file = "p.lua";  // relative to the configuration file
    pc.max_instructions = instructions;
    pc.max_memory = memory;
    pc.config.kind = config::PluginValue::Kind::kMap;
    pc.config.keys = {"limit", "name", "on"};
    config::PluginValue n, s, b;
    n.kind = config::PluginValue::Kind::kNumber;
    n.text = "3";
    s.text = "x";
    b.kind = config::PluginValue::Kind::kBool;
    b.text = "true";
    pc.config.values = {n, s, b};
    cfg.plugins.push_back(pc);
    auto host = Host::build(cfg);
    if (host && *host) {
      (*host)->setCounters(table_.get());
    }
    return host;
  }
  Info info() {
    Info i;
    i.session = 9;
    i.client = "10.1.2.3:5000";
    i.client_ip = "10.1.2.3";
    i.mapping = "a.example.com";
    i.user = "bob";
    return i;
  }
  std::string dir_;
  std::unique_ptr<metrics::PluginCounter[]> table_;
};

TEST_F(HostTest, LoadErrorsNameTheFile) {
  auto r = load("function on_connect(info) return end end");
  ASSERT_FALSE(r.ok());
  EXPECT_NE(r.error().message.find("p.lua"), std::string::npos) << r.error().message;
  r = load("x = 1");
  ASSERT_FALSE(r.ok());
  EXPECT_NE(r.error().message.find("defines none of"), std::string::npos);
  r = load("on_query = 5");
  ASSERT_FALSE(r.ok());
  EXPECT_NE(r.error().message.find("on_query is a number"), std::string::npos);
  r = load("while true do end");
  ASSERT_FALSE(r.ok());
  EXPECT_NE(r.error().message.find("instruction budget"), std::string::npos);
  r = load("io.open('/etc/passwd') function on_connect() end");  // no io library
  ASSERT_FALSE(r.ok());
  r = load("os.exit(1) function on_connect() end");
  ASSERT_FALSE(r.ok());
  r = load("dofile('/etc/passwd') function on_connect() end");
  ASSERT_FALSE(r.ok());
  r = load("coroutine.wrap(print)() function on_connect() end");  // budgets are per thread
  ASSERT_FALSE(r.ok());
  r = load("load('return 1')() function on_connect() end");  // would take bytecode
  ASSERT_FALSE(r.ok());
}

TEST_F(HostTest, HookAnswersConfigAndCounters) {
  auto r = load(R"LUA(
assert(pgproxy.config.limit == 3 and pgproxy.config.name == "x" and pgproxy.config.on == true)
local hits = 0
function on_connect(info)
  hits = hits + 1
  if info.user == "eve" then return "no eve" end
  if info.user == "mallory" then return { deny = "no", sqlstate = "42501" } end
  if info.user == "bad" then return { deny = "no", sqlstate = "lower" } end
  if info.user == "moved" then return { route = "b.example.com" } end
  if info.user == "odd" then return 42 end
  if info.user == "f" then return false end
  assert(pgproxy.ip_in(info.client_ip, "10.0.0.0/8"))
  assert(not pgproxy.ip_in(info.client_ip, "::1/128"))
  return pgproxy.counter("hits", 1) > 0
end
function on_startup(info, params)
  return { params = { application_name = params.application_name .. "+" } }
end
function on_query(info, sql)
  if sql:find("secret") then return { annotate = "seen" } end
end
)LUA");
  ASSERT_TRUE(r.ok()) << r.error().message;
  Host& h = **r;
  EXPECT_TRUE(h.has(Hook::kConnect));
  EXPECT_FALSE(h.has(Hook::kDisconnect));
  Info i = info();
  EXPECT_EQ(h.onConnect(i).kind, Verdict::Kind::kAllow);
  EXPECT_EQ(h.onConnect(i).kind, Verdict::Kind::kAllow);
  std::int64_t value = 0;
  ASSERT_TRUE(Counters(table_.get()).add("hits", 0, value));
  EXPECT_EQ(value, 2);
  i.user = "eve";
  Verdict v = h.onConnect(i);
  EXPECT_EQ(v.kind, Verdict::Kind::kDeny);
  EXPECT_EQ(v.message, "no eve");
  EXPECT_EQ(v.sqlstate, "28000");
  EXPECT_EQ(v.plugin, "p.lua");
  i.user = "mallory";
  EXPECT_EQ(h.onConnect(i).sqlstate, "42501");
  i.user = "bad";
  EXPECT_EQ(h.onConnect(i).sqlstate, "28000");  // not a SQLSTATE: the default
  i.user = "moved";
  v = h.onConnect(i);
  EXPECT_EQ(v.kind, Verdict::Kind::kAllow);
  EXPECT_EQ(v.route, "b.example.com");
  i.user = "odd";
  EXPECT_EQ(h.onConnect(i).kind, Verdict::Kind::kFailed);
  i.user = "f";
  EXPECT_EQ(h.onConnect(i).kind, Verdict::Kind::kDeny);
  v = h.onStartup(info(), {{"user", "bob"}, {"application_name", "app"}});
  ASSERT_EQ(v.params.size(), 1u);
  EXPECT_EQ(v.params[0], std::make_pair(std::string("application_name"), std::string("app+")));
  EXPECT_EQ(h.onQuery(info(), "select secret").annotate, "seen");
  EXPECT_EQ(h.onQuery(info(), "select 1").annotate, "");
}

TEST_F(HostTest, BudgetMemoryAndErrorsFailTheCallNotTheState) {
  auto r = load(R"LUA(
function on_query(info, sql)
  if sql == "loop" then while true do end end
  if sql == "hog" then local t = {} for i = 1, 100 do t[i] = string.rep("x", 1000000) .. i end end
  if sql == "raise" then error("boom") end
  if sql == "read" then return pgproxy.read_file("/etc/hostname") end
  return nil
end
)LUA",
                100000, 2 << 20);
  ASSERT_TRUE(r.ok()) << r.error().message;
  Host& h = **r;
  Verdict v = h.onQuery(info(), "loop");
  EXPECT_EQ(v.kind, Verdict::Kind::kFailed);
  EXPECT_NE(v.message.find("instruction budget"), std::string::npos) << v.message;
  v = h.onQuery(info(), "hog");
  EXPECT_EQ(v.kind, Verdict::Kind::kFailed);
  EXPECT_NE(v.message.find("memory cap"), std::string::npos) << v.message;
  v = h.onQuery(info(), "raise");
  EXPECT_NE(v.message.find("boom"), std::string::npos) << v.message;
  v = h.onQuery(info(), "read");  // files only while loading
  EXPECT_NE(v.message.find("only be called while the plugin loads"), std::string::npos);
  // The state goes on serving.
  EXPECT_EQ(h.onQuery(info(), "select 1").kind, Verdict::Kind::kAllow);
}

TEST(PluginCounters, ClaimedByNameSharedAndBounded) {
  auto table = std::make_unique<metrics::PluginCounter[]>(metrics::kMaxPluginCounters);
  Counters c(table.get());
  std::int64_t v = 0;
  ASSERT_TRUE(c.add("a", 5, v));
  ASSERT_TRUE(c.add("a", -2, v));
  EXPECT_EQ(v, 3);
  EXPECT_FALSE(c.add(std::string(60, 'n'), 1, v));
  EXPECT_FALSE(c.add("", 1, v));
  for (std::size_t i = 1; i < metrics::kMaxPluginCounters; ++i) {
    ASSERT_TRUE(c.add("c" + std::to_string(i), 1, v)) << i;
  }
  EXPECT_FALSE(c.add("one too many", 1, v));
  ASSERT_TRUE(c.add("a", 0, v));
  EXPECT_EQ(v, 3);
}

}  // namespace
}  // namespace pgproxy::plugin
