// PreparedTracker as a pure codec: client messages in, server messages and pgproxy's own replies
// out, in the order PostgreSQL would give them. (pool_prepared_test.cc checks the same against a
// real PostgreSQL; these pin down each rule on its own.)
#include "pgproxy/pool/prepared.h"

#include <gtest/gtest.h>

#include <string>
#include <vector>

#include "pgproxy/proto/wire.h"
#include "wire_test_util.h"

namespace pgproxy::pool {
namespace {

using test::bind;
using test::parse;
using test::sync;
using test::types;

std::string close(const std::string& name) {
  return proto::buildMessage('C', "S" + name + '\0');
}
std::string execute() {
  return proto::buildMessage('E', std::string("\0\0\0\0\0", 5));
}
std::string reply(char type, const std::string& body = "") {
  return proto::buildMessage(type, body);
}
std::string ready(char status = 'I') {
  return reply('Z', std::string(1, status));
}

// The names a stream's Parse/Bind/Close carry.
std::string firstName(const std::string& bytes, char type) {
  for (std::size_t i = 0; i + 5 <= bytes.size();) {
    std::uint32_t len = proto::readU32(bytes.data() + i + 1);
    if (bytes[i] == type) {
      std::string body = bytes.substr(i + 5, len - 4);
      if (type == 'B') {
        body = body.substr(body.find('\0') + 1);
      } else if (type == 'C') {
        body = body.substr(1);
      }
      return body.substr(0, body.find('\0'));
    }
    i += 1 + len;
  }
  return "";
}
std::string sqlstate(const std::string& bytes) {
  std::size_t at = bytes.find(std::string("\0C", 2));
  return at == std::string::npos ? "" : bytes.substr(at + 2, 5);
}

// Every test ends with the registry empty: a statement reference taken and never given back (or
// given back twice) shows here. The test's tracker, declared after its Fixture, is gone by then.
struct Fixture {
  ~Fixture() {
    a.clear();
    b.clear();
    EXPECT_EQ(registry.size(), 0u) << "a reference leaked";
  }
  StatementRegistry registry;
  ServerStatements a{registry}, b{registry};
  std::string up, down;
  bool client(PreparedTracker& t, ServerStatements& s, const std::string& bytes) {
    up.clear();
    down.clear();
    return t.fromClient(bytes, s, up, down);
  }
  void server(PreparedTracker& t, ServerStatements& s, const std::string& bytes) {
    up.clear();
    down.clear();
    ASSERT_TRUE(t.fromServer(bytes, &s, up, down));
  }
};

TEST(PreparedTracker, NamedStatementIsRenamedAndFollowsTheClient) {
  Fixture f;
  PreparedTracker t(f.registry, 10);
  ASSERT_TRUE(f.client(t, f.a, parse("s1", "select 1") + bind("s1") + execute() + sync()));
  EXPECT_EQ(types(f.up), "PBES");
  std::string server_name = firstName(f.up, 'P');
  EXPECT_EQ(server_name.rfind("pgproxy_", 0), 0u) << server_name;
  EXPECT_EQ(firstName(f.up, 'B'), server_name);
  f.server(t, f.a, reply('1') + reply('2') + reply('C', std::string("SELECT 1\0", 9)) + ready());
  EXPECT_EQ(types(f.down), "12CZ");

  // On a server that lacks it, the Parse goes first and its ParseComplete is pgproxy's.
  ASSERT_TRUE(f.client(t, f.b, bind("s1") + execute() + sync()));
  EXPECT_EQ(types(f.up), "PBES");
  EXPECT_EQ(firstName(f.up, 'P'), server_name);
  f.server(t, f.b, reply('1') + reply('2') + reply('C', std::string("SELECT 1\0", 9)) + ready());
  EXPECT_EQ(types(f.down), "2CZ");

  // A second Parse of the same text under another name: the server has it, pgproxy answers.
  ASSERT_TRUE(f.client(t, f.a, parse("s2", "select 1") + sync()));
  EXPECT_EQ(types(f.up), "S");
  EXPECT_EQ(types(f.down), "1");
  f.server(t, f.a, ready());
  EXPECT_EQ(types(f.down), "Z");

  // Close is answered here; the server's copy stays for whoever else uses it.
  ASSERT_TRUE(f.client(t, f.a, close("s1") + sync()));
  EXPECT_EQ(types(f.up), "S");
  EXPECT_EQ(types(f.down), "3");
  f.server(t, f.a, ready());
  EXPECT_EQ(t.statements(), 1u);
}

// In a failed transaction PostgreSQL refuses a Parse, except of a statement that ends the
// transaction: pgjdbc prepares its ROLLBACK and parses it there. The server has it already, so
// pgproxy answers (sending the Parse made the server say "already exists", found by pgjdbc).
TEST(PreparedTracker, ParseOfRollbackInAFailedTransaction) {
  Fixture f;
  PreparedTracker t(f.registry, 10);
  ASSERT_TRUE(f.client(t, f.a, parse("r1", "ROLLBACK") + sync()));
  f.server(t, f.a, reply('1') + ready());
  ASSERT_TRUE(f.client(t, f.a, parse("", "BEGIN") + bind("") + execute() + sync()));
  f.server(t, f.a, reply('1') + reply('2') + reply('C', std::string("BEGIN\0", 6)) + ready('T'));
  ASSERT_TRUE(f.client(t, f.a, parse("", "select 1/0") + bind("") + execute() + sync()));
  f.server(t, f.a,
           reply('E', std::string("SERROR\0C22012\0Mdivision by zero\0\0", 33)) + ready('E'));
  ASSERT_TRUE(f.client(t, f.a, parse("r2", "ROLLBACK") + bind("r2") + execute() + sync()));
  EXPECT_EQ(types(f.up), "BES");  // no Parse: the server has the statement
  EXPECT_EQ(types(f.down), "1");
  f.server(t, f.a, reply('2') + reply('C', std::string("ROLLBACK\0", 9)) + ready());
  EXPECT_EQ(types(f.down), "2CZ");
  // Any other statement there: the server refuses it, as it would the client's own.
  ASSERT_TRUE(f.client(t, f.a, parse("", "BEGIN") + bind("") + execute() + sync()));
  f.server(t, f.a, reply('1') + reply('2') + reply('C', std::string("BEGIN\0", 6)) + ready('T'));
  ASSERT_TRUE(f.client(t, f.a, parse("", "select 1/0") + bind("") + execute() + sync()));
  f.server(t, f.a,
           reply('E', std::string("SERROR\0C22012\0Mdivision by zero\0\0", 33)) + ready('E'));
  ASSERT_TRUE(f.client(t, f.a, parse("s3", "ROLLBACK") + sync()));
  EXPECT_EQ(types(f.up), "S");  // ROLLBACK again: the server's copy serves
  f.server(t, f.a, ready('E'));
  ASSERT_TRUE(f.client(t, f.a, parse("s4", "select 1") + sync()));
  EXPECT_EQ(types(f.up), "PS");
}

TEST(PreparedTracker, DuplicateAndMissingNamesFailAsPostgresAndSkipToSync) {
  Fixture f;
  PreparedTracker t(f.registry, 10);
  ASSERT_TRUE(f.client(t, f.a, parse("s", "select 1") + sync()));
  f.server(t, f.a, reply('1') + ready());
  ASSERT_TRUE(f.client(t, f.a, parse("s", "select 1") + bind("s") + execute() + sync()));
  EXPECT_EQ(types(f.up), "S") << "nothing of a failed batch reaches the server";
  EXPECT_EQ(sqlstate(f.down), "42P05");
  f.server(t, f.a, ready());
  EXPECT_EQ(types(f.down), "Z");
  ASSERT_TRUE(f.client(t, f.a, bind("nosuch") + execute() + sync()));
  EXPECT_EQ(types(f.up), "S");
  EXPECT_EQ(sqlstate(f.down), "26000");
}

TEST(PreparedTracker, ServerErrorUndoesTheBatchesParse) {
  Fixture f;
  PreparedTracker t(f.registry, 10);
  ASSERT_TRUE(f.client(t, f.a, parse("bad", "selec 1") + sync()));
  f.server(t, f.a, reply('E', std::string("SERROR\0C42601\0Msyntax error\0\0", 29)) + ready());
  EXPECT_EQ(types(f.down), "EZ");
  EXPECT_EQ(t.statements(), 0u);
  EXPECT_EQ(f.a.size(), 0u);
  // The name is free again.
  ASSERT_TRUE(f.client(t, f.a, parse("bad", "select 1") + sync()));
  EXPECT_EQ(types(f.up), "PS");
}

// A named message behind a batch still in flight waits for its answer: whether the earlier
// Parse worked decides what the name means.
TEST(PreparedTracker, NamedMessageAfterAnUnansweredSyncWaits) {
  Fixture f;
  PreparedTracker t(f.registry, 10);
  ASSERT_TRUE(f.client(t, f.a, parse("s", "selec 1") + sync() + parse("s", "select 1") + sync()));
  EXPECT_EQ(types(f.up), "PS");
  EXPECT_GT(t.waiting(), 0u);
  f.server(t, f.a, reply('E', std::string("SERROR\0C42601\0Msyntax error\0\0", 29)) + ready());
  EXPECT_EQ(types(f.down), "EZ");
  EXPECT_EQ(types(f.up), "PS") << "the second Parse goes once the first failed";
  EXPECT_EQ(t.waiting(), 0u);
  f.server(t, f.a, reply('1') + ready());
  EXPECT_EQ(types(f.down), "1Z");
}

TEST(PreparedTracker, EvictionClosesTheLeastRecentlyUsed) {
  Fixture f;
  PreparedTracker t(f.registry, 2);
  for (int i = 0; i < 3; ++i) {
    std::string n = "s" + std::to_string(i);
    ASSERT_TRUE(f.client(t, f.a, parse(n, "select " + std::to_string(i)) + sync()));
    if (i == 2) {
      EXPECT_EQ(types(f.up), "CPS") << "the oldest is closed to make room";
      f.server(t, f.a, reply('3') + reply('1') + ready());
      EXPECT_EQ(types(f.down), "1Z");
    } else {
      f.server(t, f.a, reply('1') + ready());
    }
  }
  EXPECT_EQ(f.a.size(), 2u);
  // The evicted one is prepared again where it is used.
  ASSERT_TRUE(f.client(t, f.a, bind("s0") + execute() + sync()));
  EXPECT_EQ(types(f.up), "CPBES");
}

TEST(PreparedTracker, DiscardAllForgetsTheClientsNames) {
  Fixture f;
  PreparedTracker t(f.registry, 10);
  ASSERT_TRUE(f.client(t, f.a, parse("s", "select 1") + sync()));
  f.server(t, f.a, reply('1') + ready());
  ASSERT_TRUE(f.client(t, f.a, proto::buildMessage('Q', std::string("discard all\0", 12))));
  f.server(t, f.a, reply('C', std::string("DISCARD ALL\0", 12)) + ready());
  EXPECT_EQ(t.statements(), 0u);
  EXPECT_EQ(f.a.size(), 0u);
}

// DDL changed a statement's result under the server's copy: the first Bind of a batch outside a
// transaction is run again on a copy prepared afresh, and the client sees only the good replies.
const std::string kStale("SERROR\0C0A000\0Mcached plan must not change result type\0\0", 56);

TEST(PreparedTracker, StalePlanIsPreparedAgainAndTheBatchRetried) {
  Fixture f;
  PreparedTracker t(f.registry, 10);
  ASSERT_TRUE(f.client(t, f.a, parse("s", "select * from t") + sync()));
  std::string name = firstName(f.up, 'P');
  f.server(t, f.a, reply('1') + ready());
  // The DDL, by simple Query: a unit of its own, not part of the next batch.
  ASSERT_TRUE(f.client(t, f.a, proto::buildMessage('Q', std::string("alter table t\0", 14))));
  f.server(t, f.a, reply('C', std::string("ALTER TABLE\0", 12)) + ready());
  ASSERT_TRUE(f.client(t, f.a, bind("s") + execute() + sync()));
  EXPECT_EQ(types(f.up), "BES");
  f.server(t, f.a, reply('E', kStale));
  EXPECT_EQ(types(f.down), "") << "the error is held back";
  EXPECT_EQ(types(f.up), "CPBES") << "closed, prepared again, the batch again";
  EXPECT_EQ(firstName(f.up, 'C'), name);
  EXPECT_EQ(firstName(f.up, 'P'), name);
  EXPECT_TRUE(t.ownReadyNext()) << "the failed try's ReadyForQuery is pgproxy's";
  f.server(t, f.a, ready());
  EXPECT_EQ(types(f.down), "");
  EXPECT_FALSE(t.ownReadyNext());
  f.server(
      t, f.a,
      reply('3') + reply('1') + reply('2') + reply('C', std::string("SELECT 1\0", 9)) + ready());
  EXPECT_EQ(types(f.down), "2CZ");
  EXPECT_EQ(t.pending(), 0u);

  // Once: the same error on the retried batch is the client's, and the copy is dropped.
  ASSERT_TRUE(f.client(t, f.a, bind("s") + execute() + sync()));
  f.server(t, f.a, reply('E', kStale));
  EXPECT_EQ(types(f.up), "CPBES");
  f.server(t, f.a, ready() + reply('3') + reply('1') + reply('E', kStale) + ready());
  EXPECT_EQ(types(f.down), "EZ");
  EXPECT_EQ(sqlstate(f.down), "0A000");
  EXPECT_EQ(f.a.size(), 0u);
  ASSERT_TRUE(f.client(t, f.a, bind("s") + execute() + sync()));
  EXPECT_EQ(types(f.up), "CPBES") << "the stale copy is closed and prepared afresh";
}

// Where running the batch again could be seen, the error is the client's: inside a transaction
// (it aborted it), after something of the batch ran or was described, or with another batch
// behind it.
TEST(PreparedTracker, StalePlanIsNotRetriedWhereTheClientCouldTell) {
  Fixture f;
  PreparedTracker t(f.registry, 10);
  ASSERT_TRUE(f.client(t, f.a, parse("s", "select * from t") + sync()));
  f.server(t, f.a, reply('1') + ready());

  ASSERT_TRUE(f.client(t, f.a, proto::buildMessage('Q', std::string("begin\0", 6))));
  f.server(t, f.a, reply('C', std::string("BEGIN\0", 6)) + ready('T'));
  ASSERT_TRUE(f.client(t, f.a, bind("s") + execute() + sync()));
  f.server(t, f.a, reply('E', kStale) + ready('E'));
  EXPECT_EQ(types(f.down), "EZ") << "in a transaction";
  EXPECT_EQ(types(f.up), "");
  ASSERT_TRUE(f.client(t, f.a, proto::buildMessage('Q', std::string("rollback\0", 9))));
  EXPECT_EQ(types(f.up), "CQ") << "the stale copy is closed";
  f.server(t, f.a, reply('3') + reply('C', std::string("ROLLBACK\0", 9)) + ready());
  EXPECT_EQ(types(f.down), "CZ");

  ASSERT_TRUE(f.client(t, f.a, parse("u", "select 2") + sync()));
  f.server(t, f.a, reply('1') + ready());
  ASSERT_TRUE(f.client(t, f.a, bind("u") + execute() + bind("s") + execute() + sync()));
  EXPECT_EQ(types(f.up), "BEPBES") << "s is prepared afresh where it is used";
  f.server(t, f.a,
           reply('2') + reply('C', std::string("SELECT 1\0", 9)) + reply('1') + reply('E', kStale) +
               ready());
  EXPECT_EQ(types(f.down), "2CEZ") << "the first Execute ran: not retried";

  ASSERT_TRUE(f.client(t, f.a, bind("u") + execute() + sync()));
  f.server(t, f.a, reply('2') + reply('C', std::string("SELECT 1\0", 9)) + ready());
  ASSERT_TRUE(f.client(t, f.a, bind("u") + execute() + sync() + sync()));
  EXPECT_EQ(types(f.up), "CBESS");
  f.server(t, f.a, reply('3') + reply('E', kStale) + ready() + ready());
  EXPECT_EQ(types(f.down), "EZZ") << "a batch behind it";
  EXPECT_EQ(types(f.up), "");

  // A Sync with a body (found by the fuzzer: the batch was kept without the body's bytes).
  ASSERT_TRUE(f.client(t, f.a, bind("u") + execute() + proto::buildMessage('S', "xyz")));
  EXPECT_EQ(types(f.up), "CPBES");
  f.server(t, f.a, reply('3') + reply('1') + reply('E', kStale) + ready());
  EXPECT_EQ(types(f.down), "EZ");
  EXPECT_EQ(types(f.up), "");
}

// What pgproxy holds for a retry is bounded: a batch of over 64 KiB is not kept (its error is the
// client's), and an ErrorResponse too long to be a stale plan's goes on to the client whole.
TEST(PreparedTracker, StalePlanRetryHoldsBoundedBytes) {
  Fixture f;
  PreparedTracker t(f.registry, 10);
  ASSERT_TRUE(f.client(t, f.a, parse("s", "select $1::text") + sync()));
  f.server(t, f.a, reply('1') + ready());
  auto bindWith = [](std::size_t bytes) {
    std::string body = std::string("\0s\0", 3) + test::u16(0) + test::u16(1);
    proto::appendU32(body, static_cast<std::uint32_t>(bytes));
    body += std::string(bytes, 'x') + test::u16(0);
    return proto::buildMessage('B', body);
  };
  // 40 KiB, then 40 KiB more in the same batch: past the bound once both are in.
  ASSERT_TRUE(
      f.client(t, f.a, bindWith(40 << 10) + execute() + bindWith(40 << 10) + execute() + sync()));
  EXPECT_EQ(types(f.up), "BEBES");
  f.server(t, f.a, reply('E', kStale) + ready());
  EXPECT_EQ(types(f.down), "EZ") << "not kept: the client's error";
  EXPECT_EQ(types(f.up), "");

  ASSERT_TRUE(f.client(t, f.a, bind("s") + execute() + sync()));
  EXPECT_EQ(types(f.up), "CPBES");
  std::string long_error = "SERROR\0C0A000\0M" + std::string(9000, 'm') + std::string(2, '\0');
  f.server(t, f.a, reply('3') + reply('1') + reply('E', long_error) + ready());
  EXPECT_EQ(types(f.down), "EZ");
  EXPECT_EQ(f.down.size(), 1 + 4 + long_error.size() + 6) << "the error whole, then the Z";
  EXPECT_EQ(types(f.up), "") << "not a stale plan's: no retry";
}

TEST(PreparedTracker, MalformedStreamsEndTheClientNotTheProcess) {
  Fixture f;
  PreparedTracker t(f.registry, 10);
  std::string bad("P\0\0\0\x02", 5);  // a length shorter than itself
  EXPECT_FALSE(f.client(t, f.a, bad));
  EXPECT_FALSE(t.fatal().empty());
  PreparedTracker u(f.registry, 10);
  // A named Parse without its terminators: the server says what is wrong with it.
  ASSERT_TRUE(f.client(u, f.a, proto::buildMessage('P', "s") + sync()));
  EXPECT_EQ(types(f.up), "PS");
}

}  // namespace
}  // namespace pgproxy::pool
