// The log never stalls the data path: a log_file that is a FIFO nobody reads (a stalled journald,
// a full pipe) costs lines, counted and reported, never sessions.
#include <fcntl.h>
#include <gtest/gtest.h>
#include <sys/stat.h>
#include <unistd.h>

#include <regex>
#include <string>

#include "harness.h"

namespace pgproxy::it {
namespace {

using std::chrono::seconds;

long long droppedMetric(const std::string& text, const std::string& log) {
  std::string key = "pgproxy_log_lines_dropped_total{log=\"" + log + "\"} ";
  std::size_t at = text.find(key);
  return at == std::string::npos ? -1 : std::stoll(text.substr(at + key.size()));
}

TEST(Log, StalledLogFifoDoesNotStallSessions) {
  std::string dir = tempDir("pgproxy-logfifo");
  std::string fifo = dir + "/log.fifo";
  ASSERT_EQ(mkfifo(fifo.c_str(), 0666), 0);
  // The read end is open (pgproxy's open of the FIFO would wait for one) but nobody reads it.
  int reader = open(fifo.c_str(), O_RDONLY | O_NONBLOCK | O_CLOEXEC);
  ASSERT_GE(reader, 0);
  fcntl(reader, F_SETPIPE_SZ, 4096);
  int admin = freePort();
  Proxy proxy("debug: true\nlog_file: " + fifo +
                  "\nadmin: {listen: \"127.0.0.1:" + std::to_string(admin) +
                  "\"}\n"
                  "mappings:\n  - {external: host1.example.com, internal: 127.0.0.1, port: {P1}}\n",
              1);
  // Each session logs about 1 KiB (debug lines and its access line): the pipe (one page) and the
  // worker's buffer (64 KiB) fill after some 60 sessions. A blocking write would hang the worker
  // here, and with it every session.
  for (int i = 0; i < 200; ++i) {
    auto r = run({"psql", "-X", "-A", "-t", "-c", "select 1", proxy.plain()}, seconds(30));
    ASSERT_EQ(r.exit_code, 0) << "login " << i << ": " << r.output;
    ASSERT_EQ(r.output, "1\n") << "login " << i;
  }
  std::string metrics = httpGet(admin, "/metrics").body;
  EXPECT_GT(droppedMetric(metrics, "main"), 0) << metrics;
  EXPECT_EQ(droppedMetric(metrics, "access"), 0) << metrics;

  // The reader catches up: every process writes what waited, then says how much it dropped.
  std::string got;
  std::regex notice("dropped ([0-9]+) lines: the log was not writable");
  std::smatch m;
  EXPECT_TRUE(eventually([&] {
    char buf[65536];
    for (ssize_t n; (n = read(reader, buf, sizeof(buf))) > 0;) {
      got.append(buf, static_cast<std::size_t>(n));
    }
    return std::regex_search(got, m, notice);
  })) << got.substr(got.size() > 4000 ? got.size() - 4000 : 0);
  if (!m.empty()) {
    EXPECT_GT(std::stoll(m[1]), 0);
  }
  // Lines were dropped whole, never cut: every line the reader got is a complete log line.
  std::regex line(
      "\\d{4}-\\d\\d-\\d\\dT\\d\\d:\\d\\d:\\d\\d\\.\\d{3}Z \\[[a-z]+( \\d+)?\\] "
      "(debug|info|warning|error): [^\\n]*");
  std::size_t at = 0, lines = 0;
  while (at < got.size()) {
    std::size_t nl = got.find('\n', at);
    ASSERT_NE(nl, std::string::npos) << "unterminated: " << got.substr(at);
    std::string one = got.substr(at, nl - at);
    ASSERT_TRUE(std::regex_match(one, line)) << "not a whole log line: " << one;
    ++lines;
    at = nl + 1;
  }
  EXPECT_GT(lines, 100u);
  close(reader);
  run({"rm", "-rf", dir});
}

}  // namespace
}  // namespace pgproxy::it
