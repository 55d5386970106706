// Micro-benchmark of the read/write split's classifier (issue 18): the cost per statement of
// sql::classifyForSplit on typical ORM statements, reads and writes. Goal: at most 2 us each.
//   make bench/read_only_bench && bench/read_only_bench [iterations]
// Prints one line per statement and the mean, in ns per statement; judged by a human, not a test
// (a timed assertion on a shared 2-core machine would be a flaky test).
#include <chrono>
#include <cstdio>
#include <cstdlib>
#include <iterator>
#include <string>
#include <string_view>

#include "pgproxy/sql/read_only.h"

namespace {

constexpr std::string_view kStatements[] = {
    // SQLAlchemy / Django / ActiveRecord style reads.
    "SELECT users.id AS users_id, users.email AS users_email, users.created_at AS "
    "users_created_at FROM users WHERE users.id = $1 LIMIT $2",
    "SELECT \"orders\".\"id\", \"orders\".\"total\", \"orders\".\"status\" FROM \"orders\" "
    "INNER JOIN \"customers\" ON (\"orders\".\"customer_id\" = \"customers\".\"id\") WHERE "
    "(\"customers\".\"region\" = $1 AND \"orders\".\"created\" >= $2) ORDER BY "
    "\"orders\".\"created\" DESC LIMIT 21",
    "SELECT count(*) AS count_1 FROM (SELECT accounts.id FROM accounts WHERE accounts.owner = $1) "
    "AS anon_1",
    "SELECT abalance FROM pgbench_accounts WHERE aid = $1",
    // Writes.
    "INSERT INTO \"events\" (\"kind\", \"payload\", \"created\") VALUES ($1, $2, $3) RETURNING "
    "\"events\".\"id\"",
    "UPDATE pgbench_accounts SET abalance = abalance + $1 WHERE aid = $2",
    "SELECT * FROM jobs WHERE state = 'queued' ORDER BY id LIMIT 1 FOR UPDATE SKIP LOCKED",
    "BEGIN",
};

}  // namespace

int main(int argc, char** argv) {
  long iterations = argc > 1 ? std::atol(argv[1]) : 200000;
  pgproxy::sql::ReadOnlyFunctions functions({"app.lookup"});
  double total_ns = 0;
  int sink = 0;
  for (std::string_view sql : kStatements) {
    auto start = std::chrono::steady_clock::now();
    for (long i = 0; i < iterations; ++i) {
      sink += static_cast<int>(pgproxy::sql::classifyForSplit(sql, functions).target);
    }
    double ns =
        std::chrono::duration<double, std::nano>(std::chrono::steady_clock::now() - start).count() /
        static_cast<double>(iterations);
    total_ns += ns;
    std::printf(
        "%8.0f ns  %-8s %.60s\n", ns,
        pgproxy::sql::classifyForSplit(sql, functions).target == pgproxy::sql::Target::kStandby
            ? "standby"
            : "primary",
        std::string(sql).c_str());
  }
  std::printf("%8.0f ns  mean per statement (%ld iterations each; %d)\n",
              total_ns / static_cast<double>(std::size(kStatements)), iterations, sink % 2);
  return 0;
}
