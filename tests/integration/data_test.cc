// Bytes go through unchanged and nothing is lost, under volume and under connection churn.
#include <gtest/gtest.h>

#include <regex>

#include "harness.h"

namespace pgproxy::it {
namespace {

const char* kMappings = R"(default: host1.example.com
mappings:
  - {external: host1.example.com, internal: 127.0.0.1, port: {P1}}
  - {external: host2.example.com, internal: 127.0.0.1, port: {P2}}
)";

// ~51 MB of rows: 100k lines of 512 hex chars plus the row number.
const char* kBigQuery =
    "select i, repeat(md5(i::text), 16) from generate_series(1, 100000) i order by i";

TEST(Data, FiftyMegabyteCopyIsByteIdenticalBothWays) {
  Proxy proxy(kMappings);
  std::string dir = tempDir("pgproxy-copy");
  std::string viaProxy = dir + "/via_proxy.txt", direct1 = dir + "/direct.txt",
              back = dir + "/back.txt";
  // Download through the proxy (TLS) and directly, then compare.
  auto a =
      psql(proxy.tls("host1"), "\\copy (" + std::string(kBigQuery) + ") to '" + viaProxy + "'");
  ASSERT_EQ(a.exit_code, 0) << a.output;
  auto b =
      psql(direct(sandbox().port1), "\\copy (" + std::string(kBigQuery) + ") to '" + direct1 + "'");
  ASSERT_EQ(b.exit_code, 0) << b.output;
  std::string x = readFile(viaProxy), y = readFile(direct1);
  EXPECT_GT(x.size(), 50u * 1000 * 1000);
  EXPECT_TRUE(x == y) << "COPY through pgproxy differs from direct";
  // Upload through the proxy (plaintext this time), read back directly.
  ASSERT_EQ(psql(direct(sandbox().port1),
                 "drop table if exists copy_in; create table copy_in(i int, t text)")
                .exit_code,
            0);
  auto up = psql(proxy.plain(), "\\copy copy_in from '" + viaProxy + "'");
  ASSERT_EQ(up.exit_code, 0) << up.output;
  auto c =
      psql(direct(sandbox().port1), "\\copy (select * from copy_in order by i) to '" + back + "'");
  ASSERT_EQ(c.exit_code, 0) << c.output;
  EXPECT_TRUE(readFile(back) == x) << "COPY FROM through pgproxy lost or changed bytes";
  psql(direct(sandbox().port1), "drop table copy_in");
  run({"rm", "-rf", dir});
}

TEST(Data, PgbenchConnectionPerTransactionLosesNothing) {
  Proxy proxy(kMappings, 2);
  auto init = run({"pgbench", "-i", "-q", "-s", "1", direct(sandbox().port2)});
  ASSERT_EQ(init.exit_code, 0) << init.output;
  ASSERT_EQ(psql(direct(sandbox().port2),
                 "drop table if exists ledger; create table ledger(id bigserial primary key, "
                 "c int, t timestamptz default now())")
                .exit_code,
            0);
  std::string benchDir = tempDir("pgproxy-bench");
  std::string script = benchDir + "/ledger.sql";
  writeFile(script, "INSERT INTO ledger(c) VALUES (:client_id);\n");
  const int clients = 32, perClient = 15;
  auto r = run({"pgbench", "-n", "-C", "-c", std::to_string(clients), "-j", "2", "-t",
                std::to_string(perClient), "-f", script, proxy.tls("host2")},
               std::chrono::seconds(300));
  ASSERT_EQ(r.exit_code, 0) << r.output;
  int n = clients * perClient;
  EXPECT_NE(r.output.find("number of transactions actually processed: " + std::to_string(n) + "/" +
                          std::to_string(n)),
            std::string::npos)
      << r.output;
  EXPECT_NE(r.output.find("number of failed transactions: 0"), std::string::npos) << r.output;
  EXPECT_EQ(r.output.find("aborted"), std::string::npos) << r.output;
  // pgbench can report success while clients aborted; the row count is the proof.
  EXPECT_EQ(psql(direct(sandbox().port2), "select count(*) from ledger").output,
            std::to_string(n) + "\n");
  // And the select-only workload, with a new connection per transaction.
  auto s = run({"pgbench", "-n", "-S", "-C", "-c", std::to_string(clients), "-j", "2", "-t", "10",
                proxy.tls("host2")},
               std::chrono::seconds(300));
  ASSERT_EQ(s.exit_code, 0) << s.output;
  EXPECT_NE(s.output.find("number of failed transactions: 0"), std::string::npos) << s.output;
  run({"rm", "-rf", benchDir});
}

}  // namespace
}  // namespace pgproxy::it
