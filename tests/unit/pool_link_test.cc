#include <gtest/gtest.h>

#include <string>

#include "pgproxy/pool/link.h"
#include "pgproxy/pool/params.h"
#include "pgproxy/proto/wire.h"

namespace pgproxy::pool {
namespace {

std::string msg(char type, const std::string& body) {
  return proto::buildMessage(type, body);
}

TEST(ClientFlow, CountsOwedReadyForQueryAndCutsTerminate) {
  ClientFlow f;
  std::string q = msg('Q', std::string("SELECT 1") + '\0');
  auto fed = f.feed(q + q);
  EXPECT_EQ(fed.forward, 2 * q.size());
  EXPECT_FALSE(fed.terminate);
  EXPECT_EQ(f.owed(), 2u);
  EXPECT_FALSE(f.quiet());
  f.answered();
  f.answered();
  EXPECT_TRUE(f.quiet());
  std::string x("X\0\0\0\4", 5);
  fed = f.feed(q + x + "junk");
  EXPECT_EQ(fed.forward, q.size());  // Terminate and what follows stay with pgproxy
  EXPECT_TRUE(fed.terminate);
  fed = f.feed(q);
  EXPECT_EQ(fed.forward, 0u);
  EXPECT_TRUE(fed.terminate);
}

TEST(ClientFlow, ExtendedProtocolWaitsForSync) {
  ClientFlow f;
  std::string batch = msg('P', std::string("\0SELECT 1\0\0\0", 12)) +
                      msg('B', std::string(8, '\0')) + msg('E', std::string(5, '\0'));
  f.feed(batch);
  EXPECT_EQ(f.owed(), 0u);
  EXPECT_FALSE(f.quiet());  // no Sync yet: the server must stay with this client
  EXPECT_EQ(releaseAfterReady(config::PoolMode::kTransaction, 'I', f), Release::kKeep);
  f.feed(msg('S', ""));
  EXPECT_EQ(f.owed(), 1u);
  f.answered();
  EXPECT_TRUE(f.quiet());
  EXPECT_EQ(releaseAfterReady(config::PoolMode::kTransaction, 'I', f), Release::kRelease);
}

TEST(ClientFlow, SplitMessagesAreNotQuietUntilWhole) {
  ClientFlow f;
  std::string q = msg('Q', std::string("SELECT 1") + '\0');
  for (std::size_t i = 0; i + 1 < q.size(); ++i) {
    auto fed = f.feed(q.substr(i, 1));
    EXPECT_EQ(fed.forward, 1u);
    EXPECT_FALSE(f.atBoundary()) << i;
  }
  f.feed(q.substr(q.size() - 1));
  EXPECT_TRUE(f.atBoundary());
  EXPECT_EQ(f.owed(), 1u);
  // A Terminate byte inside another message's body is just a byte.
  ClientFlow g;
  auto fed = g.feed(msg('Q', std::string("X") + '\0'));
  EXPECT_FALSE(fed.terminate);
}

TEST(ClientFlow, BadLengthIsRefused) {
  ClientFlow f;
  auto fed = f.feed(std::string("Q\0\0\0\3", 5));
  EXPECT_TRUE(fed.bad);
}

TEST(ClientFlow, ReleaseByMode) {
  ClientFlow f;
  f.feed(msg('Q', std::string("BEGIN") + '\0'));
  f.answered();
  EXPECT_EQ(releaseAfterReady(config::PoolMode::kTransaction, 'T', f), Release::kKeep);
  EXPECT_EQ(releaseAfterReady(config::PoolMode::kTransaction, 'E', f), Release::kKeep);
  EXPECT_EQ(releaseAfterReady(config::PoolMode::kStatement, 'T', f),
            Release::kStatementInTransaction);
  EXPECT_EQ(releaseAfterReady(config::PoolMode::kStatement, 'I', f), Release::kRelease);
  EXPECT_EQ(releaseAfterReady(config::PoolMode::kSession, 'I', f), Release::kKeep);
}

TEST(Params, CaseInsensitiveNames) {
  Params p;
  p.set("TimeZone", "UTC");
  p.set("timezone", "Europe/Paris");
  ASSERT_EQ(p.size(), 1u);
  EXPECT_EQ(*p.get("TIMEZONE"), "Europe/Paris");
  p.remove("timeZONE");
  EXPECT_TRUE(p.empty());
}

TEST(Params, SameReportedSettableIgnoresWhatTheServerOwns) {
  Params primary, standby;
  for (Params* p : {&primary, &standby}) {
    p->set("TimeZone", "UTC");
    p->set("application_name", "");
    p->set("server_version", "15.18");
  }
  primary.set("in_hot_standby", "off");
  standby.set("in_hot_standby", "on");  // the server's: not the client's to carry
  EXPECT_TRUE(sameReportedSettable(primary, standby));
  standby.set("timezone", "Europe/Paris");
  EXPECT_FALSE(sameReportedSettable(primary, standby));
  standby.set("TimeZone", "UTC");
  standby.set("search_path", "app");  // one has it, the other not
  EXPECT_FALSE(sameReportedSettable(primary, standby));
  EXPECT_TRUE(sameReportedSettable(Params(), Params()));
}

TEST(ClientFlow, LastOwedIsTheOnlyBatchInFlight) {
  ClientFlow f;
  std::string q = msg('Q', std::string("SELECT 1") + '\0');
  f.feed(q);
  EXPECT_TRUE(f.lastOwed());
  f.feed(q.substr(0, 3));  // the next one half sent
  EXPECT_FALSE(f.lastOwed());
  f.feed(q.substr(3));
  EXPECT_FALSE(f.lastOwed());  // two owed
  f.answered();
  EXPECT_TRUE(f.lastOwed());
  f.feed(msg('P', std::string(3, '\0') + std::string(2, '\0')));  // extended, no Sync yet
  EXPECT_FALSE(f.lastOwed());
}

TEST(Params, ParameterStatusRoundTrip) {
  std::string m = buildParameterStatus("DateStyle", "ISO, MDY");
  std::string_view name, value;
  ASSERT_TRUE(parseParameterStatus(std::string_view(m).substr(5), name, value));
  EXPECT_EQ(name, "DateStyle");
  EXPECT_EQ(value, "ISO, MDY");
  EXPECT_FALSE(parseParameterStatus(std::string_view("a\0b", 3), name, value));
  EXPECT_FALSE(parseParameterStatus(std::string_view("\0b\0", 3), name, value));
  EXPECT_FALSE(parseParameterStatus(std::string_view("a\0b\0c", 5), name, value));
}

TEST(StartupSplit, SeparatesReportedExtrasAndOptions) {
  StartupSplit s;
  std::string err =
      splitStartup({{"user", "alice"},
                    {"application_name", "psql"},
                    {"extra_float_digits", "3"},
                    {"options", "-c search_path=a\\ b --statement-timeout=5s -cwork_mem=64MB"},
                    {"_pq_.protocol_managed", "x"}},
                   s);
  EXPECT_EQ(err, "");
  EXPECT_EQ(s.user, "alice");
  EXPECT_EQ(s.database, "alice");  // PostgreSQL's default
  EXPECT_EQ(*s.reported.get("application_name"), "psql");
  EXPECT_EQ(*s.reported.get("search_path"), "a b");
  EXPECT_EQ(*s.extras.get("extra_float_digits"), "3");
  EXPECT_EQ(*s.extras.get("statement_timeout"), "5s");
  EXPECT_EQ(*s.extras.get("work_mem"), "64MB");
  EXPECT_EQ(s.extras.get("_pq_.protocol_managed"), nullptr);
}

TEST(StartupSplit, RefusesWhatAPoolCannotHonour) {
  StartupSplit a;
  EXPECT_NE(splitStartup({{"user", "u"}, {"replication", "database"}}, a), "");
  StartupSplit b;
  EXPECT_EQ(splitStartup({{"user", "u"}, {"replication", "false"}}, b), "");
  StartupSplit c;
  EXPECT_NE(splitStartup({{"user", "u"}, {"options", "-d 5"}}, c), "");
  StartupSplit d;
  EXPECT_NE(splitStartup({{"user", "u"}, {"options", "-c novalue"}}, d), "");
}

TEST(SyncQuery, SetsWhatDiffersAndResetsStaleExtras) {
  Params base, client, server, cx, sx;
  base.set("TimeZone", "UTC");
  base.set("DateStyle", "ISO, MDY");
  base.set("server_version", "15.1");  // the server's, never set
  client.set("TimeZone", "Europe/Paris");
  server.set("TimeZone", "UTC");
  server.set("DateStyle", "ISO, MDY");
  server.set("server_version", "15.2");
  EXPECT_EQ(syncQuery(base, client, server, cx, sx),
            "SELECT pg_catalog.set_config(E'TimeZone', E'Europe/Paris', false)");
  server.set("TimeZone", "Europe/Paris");
  EXPECT_EQ(syncQuery(base, client, server, cx, sx), "");
  // A client without changes on a server another client changed: the pool's values come back.
  server.set("DateStyle", "German");
  EXPECT_EQ(syncQuery(base, Params(), server, cx, sx),
            "SELECT pg_catalog.set_config(E'TimeZone', E'UTC', false), "
            "pg_catalog.set_config(E'DateStyle', E'ISO, MDY', false)");
  server.set("DateStyle", "ISO, MDY");
  sx.set("work_mem", "64MB");
  EXPECT_EQ(syncQuery(base, client, server, cx, sx), "RESET \"work_mem\"");
  cx.set("statement_timeout", "it's\\");
  EXPECT_EQ(syncQuery(base, client, server, cx, sx),
            "SELECT pg_catalog.set_config(E'statement_timeout', E'it''s\\\\', false); RESET "
            "\"work_mem\"");
}

}  // namespace
}  // namespace pgproxy::pool

namespace pgproxy::pool {
namespace {

TEST(StateDigest, SameEffectiveStateSameDigest) {
  Params welcome, server, none;
  welcome.set("TimeZone", "UTC");
  welcome.set("DateStyle", "ISO, MDY");
  welcome.set("server_version", "15.1");
  server.set("datestyle", "ISO, MDY");  // another order, another case, and no server_version
  server.set("TimeZone", "UTC");
  EXPECT_EQ(stateDigest(welcome, none, none), stateDigest(server, none, none));
  Params changed;
  changed.set("TimeZone", "Europe/Paris");
  EXPECT_NE(stateDigest(welcome, changed, none), stateDigest(server, none, none));
  server.set("TimeZone", "Europe/Paris");
  EXPECT_EQ(stateDigest(welcome, changed, none), stateDigest(server, none, none));
  Params extras;
  extras.set("work_mem", "64MB");
  EXPECT_NE(stateDigest(welcome, changed, extras), stateDigest(server, none, none));
  // An extra is not a reported parameter of the same name and value.
  Params as_reported;
  as_reported.set("work_mem", "64MB");
  EXPECT_NE(stateDigest(none, none, extras), stateDigest(none, as_reported, none));
}

// Two workers sharing a pool of 20 under a steady load: each keeps the servers its clients
// need, and gives one up only when it holds more than its share (the trade that made every
// worker close and reopen servers all the time under pgbench).
TEST(PoolShare, AWorkerGivesUpOnlyWhatItHoldsBeyondItsShare) {
  PoolShare s;
  s.size = 20;
  // Balanced: 10 each, both busy, theirs queueing a little more.
  s.mine = 10, s.my_idle = 1, s.my_waiting = 2, s.all = 20, s.all_idle = 1, s.all_waiting = 5;
  EXPECT_FALSE(aboveShare(s));
  // I hold 16 and use 8: the other worker's 12 waiting clients deserve some.
  s.mine = 16, s.my_idle = 8, s.my_waiting = 0, s.all = 20, s.all_idle = 8, s.all_waiting = 12;
  EXPECT_TRUE(aboveShare(s));
  // Nobody here wants one: any idle server of mine goes to whoever waits.
  s.mine = 1, s.my_idle = 1, s.all = 1, s.all_idle = 1, s.all_waiting = 1;
  EXPECT_TRUE(aboveShare(s));
  s.mine = 0, s.my_idle = 0;
  EXPECT_FALSE(aboveShare(s));
  // Nobody else counted yet: keep.
  s.mine = 4, s.my_idle = 1, s.my_waiting = 2, s.all = 4, s.all_idle = 1, s.all_waiting = 2;
  EXPECT_FALSE(aboveShare(s));
  // A pool of 1 whose server I use while the other worker waits: mine until I am done with it.
  s.size = 1, s.mine = 1, s.my_idle = 0, s.my_waiting = 0, s.all = 1, s.all_idle = 0;
  s.all_waiting = 1;
  EXPECT_FALSE(aboveShare(s));
}

}  // namespace
}  // namespace pgproxy::pool
