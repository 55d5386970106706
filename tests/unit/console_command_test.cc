// The admin console's command parser: every command of the table, in any case, with the names
// operators type, and a clear error for everything else.
#include "pgproxy/admin/console_command.h"

#include <gtest/gtest.h>

#include <string>

namespace pgproxy::admin {
namespace {

Command parsed(const std::string& sql) {
  auto r = parseCommand(sql);
  EXPECT_TRUE(r.ok()) << sql << ": " << (r.ok() ? "" : r.error().message);
  return r.ok() ? *r : Command{};
}

std::string error(const std::string& sql) {
  auto r = parseCommand(sql);
  EXPECT_FALSE(r.ok()) << sql;
  return r.ok() ? "" : r.error().message;
}

TEST(ConsoleCommand, EveryCommandOfTheTable) {
  EXPECT_EQ(parsed("SHOW POOLS").topic, Topic::kPools);
  EXPECT_EQ(parsed("show backends;").topic, Topic::kBackends);
  EXPECT_EQ(parsed("  Show Version ; ").verb, Verb::kShow);
  for (const TopicSpec& t : topics()) {
    EXPECT_EQ(parsed("SHOW " + std::string(t.keyword)).topic, t.topic);
  }
  Command c = parsed("pause");
  EXPECT_EQ(c.verb, Verb::kPause);
  EXPECT_EQ(c.target, "");
  c = parsed("PAUSE host1.example.com");
  EXPECT_EQ(c.target, "host1.example.com");
  EXPECT_EQ(parsed("RESUME \"*.db.example.com\"").target, "*.db.example.com");
  EXPECT_EQ(parsed("DISABLE 'odd name'").target, "odd name");
  EXPECT_EQ(parsed("ENABLE 'it''s'").target, "it's");
  EXPECT_EQ(parsed("KILL db1").verb, Verb::kKill);
  c = parsed("KILL_CLIENT 1234");
  EXPECT_EQ(c.verb, Verb::kKillClient);
  EXPECT_EQ(c.client, 1234u);
  EXPECT_EQ(parsed("RECONNECT db1").verb, Verb::kReconnect);
  c = parsed("DRAIN BACKEND 10.0.0.30:5432");
  EXPECT_EQ(c.verb, Verb::kDrainBackend);
  EXPECT_EQ(c.target, "10.0.0.30:5432");
  EXPECT_EQ(parsed("undrain backend [::1]:6432").target, "[::1]:6432");
  EXPECT_EQ(parsed("RELOAD").verb, Verb::kReload);
  EXPECT_FALSE(parsed("SHUTDOWN").wait);
  EXPECT_TRUE(parsed("shutdown wait").wait);
  // Comments, as psql passes them on with -c.
  EXPECT_EQ(parsed("/* a /* nested */ one */ SHOW -- the pools\n POOLS").topic, Topic::kPools);
  EXPECT_EQ(parsed("").verb, Verb::kEmpty);
  EXPECT_EQ(parsed(" ; -- nothing").verb, Verb::kEmpty);
}

TEST(ConsoleCommand, RefusalsSayWhatIsExpected) {
  EXPECT_NE(error("SELECT 1").find("unknown command \"SELECT\"; the console runs SHOW, PAUSE"),
            std::string::npos);
  EXPECT_NE(error("SHOW").find("SHOW what? MAPPINGS, BACKENDS"), std::string::npos);
  EXPECT_NE(error("SHOW TABLES").find("SHOW what?"), std::string::npos);
  EXPECT_NE(error("DISABLE").find("DISABLE needs a mapping's name"), std::string::npos);
  EXPECT_NE(error("DISABLE ''").find("needs a mapping's name"), std::string::npos);
  EXPECT_NE(error("KILL_CLIENT x").find("KILL_CLIENT needs a client's id"), std::string::npos);
  EXPECT_NE(error("KILL_CLIENT 99999999999999999999").find("client's id"), std::string::npos);
  EXPECT_NE(error("DRAIN 10.0.0.1:5432").find("DRAIN needs BACKEND"), std::string::npos);
  for (const char* bad : {"DRAIN BACKEND 10.0.0.1", "DRAIN BACKEND h:0", "DRAIN BACKEND h:65536",
                          "DRAIN BACKEND :5432", "DRAIN BACKEND ::1:5432", "DRAIN BACKEND h:"}) {
    EXPECT_NE(error(bad).find("needs a backend's host:port"), std::string::npos) << bad;
  }
  EXPECT_NE(error("SHOW POOLS; SHOW CLIENTS").find("one command per query"), std::string::npos);
  EXPECT_NE(error("RELOAD now").find("unexpected \"now\" after RELOAD"), std::string::npos);
  EXPECT_NE(error("PAUSE 'open").find("quoted name is not closed"), std::string::npos);
  EXPECT_NE(error("SHOW POOLS /* open").find("comment is not closed"), std::string::npos);
  EXPECT_NE(error("SHOW (POOLS)").find("unexpected character '('"), std::string::npos);
  EXPECT_NE(error("PAUSE " + std::string(600, 'a')).find("longer than 512"), std::string::npos);
  // Found by the fuzzer: doubled quotes counted past the bound, so the name did not read back.
  EXPECT_NE(error("PAUSE '" + std::string(512, 'a') + "'''").find("longer than 512"),
            std::string::npos);
  EXPECT_EQ(parsed("PAUSE '" + std::string(510, 'a') + "''x'").target.size(), 512u);
  for (const std::string& e : {error("x"), error("SHOW x")}) {
    EXPECT_EQ(e.rfind("pgproxy console: ", 0), 0u) << e;
  }
}

TEST(ConsoleCommand, FormatReadsBackTheSame) {
  for (const char* sql :
       {"SHOW POOLS", "PAUSE", "PAUSE host1.example.com", "RESUME \"a b\"", "DISABLE 'x\"y'",
        "KILL_CLIENT 7", "DRAIN BACKEND [::1]:5432", "SHUTDOWN WAIT", "PAUSE \"WAIT\"", "RELOAD"}) {
    Command c = parsed(sql);
    std::string text = formatCommand(c);
    EXPECT_EQ(parsed(text), c) << sql << " -> " << text;
  }
  // Found by the fuzzer: written bare, this name read back as a comment.
  EXPECT_EQ(parsed(formatCommand(parsed("RESUME '--'"))).target, "--");
  EXPECT_EQ(formatCommand(parsed("pause  db1 ;")), "PAUSE db1");
  EXPECT_EQ(formatCommand(parsed("resume 'a b'")), "RESUME \"a b\"");
}

}  // namespace
}  // namespace pgproxy::admin
