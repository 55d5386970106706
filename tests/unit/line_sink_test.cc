// LineSink and the logger against real descriptors that stop taking bytes: a pipe nobody reads,
// a FIFO whose reader stalls, a pipe whose reader went away.
#include "pgproxy/log/line_sink.h"

#include <fcntl.h>
#include <gtest/gtest.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <unistd.h>

#include <atomic>
#include <csignal>
#include <cstdio>
#include <cstdlib>
#include <string>
#include <vector>

#include "pgproxy/log/log.h"

namespace pgproxy::log {
namespace {

struct Pipe {
  int r = -1, w = -1;
  Pipe() {
    int fds[2];
    EXPECT_EQ(pipe2(fds, O_NONBLOCK | O_CLOEXEC), 0);
    r = fds[0];
    w = fds[1];
    fcntl(w, F_SETPIPE_SZ, 4096);  // one page: fills after a few dozen lines
  }
  ~Pipe() {
    if (r >= 0) {
      close(r);
    }
    if (w >= 0) {
      close(w);
    }
  }
  // Reads up to `max` bytes that are there now.
  std::string read(std::size_t max = 1 << 20) {
    std::string out;
    char buf[4096];
    while (out.size() < max) {
      ssize_t n = ::read(r, buf, std::min(sizeof(buf), max - out.size()));
      if (n <= 0) {
        break;
      }
      out.append(buf, static_cast<std::size_t>(n));
    }
    return out;
  }
};

std::string numbered(int i) {
  char buf[128];
  std::snprintf(buf, sizeof(buf), "line %06d %s\n", i, std::string(80, 'x').c_str());
  return buf;
}

// Every line whole, numbers strictly increasing; returns how many.
int checkLines(const std::string& text) {
  int count = 0, last = -1;
  std::size_t at = 0;
  while (at < text.size()) {
    std::size_t nl = text.find('\n', at);
    EXPECT_NE(nl, std::string::npos) << "unterminated tail: " << text.substr(at);
    if (nl == std::string::npos) {
      break;
    }
    std::string line = text.substr(at, nl + 1 - at);
    int n = std::atoi(line.c_str() + 5);
    EXPECT_EQ(line, numbered(n)) << "broken line at byte " << at;
    EXPECT_GT(n, last);
    last = n;
    ++count;
    at = nl + 1;
  }
  return count;
}

TEST(LineSink, WritesAtOnceWhileTheDescriptorTakesLines) {
  Pipe p;
  LineSink sink(1024);
  sink.attach(p.w);
  for (int i = 0; i < 3; ++i) {
    EXPECT_TRUE(sink.append(numbered(i)));
  }
  EXPECT_FALSE(sink.pending());
  EXPECT_EQ(p.read(), numbered(0) + numbered(1) + numbered(2));
}

TEST(LineSink, StalledReaderBuffersWholeLinesThenDropsAndCounts) {
  Pipe p;
  std::atomic<std::uint64_t> counter{0};
  LineSink sink(2048);
  sink.setDropCounter(&counter);
  sink.attach(p.w);
  int appended = 0, refused = 0;
  // Never blocks: the pipe fills, then the buffer, then lines are dropped.
  for (; appended < 200; ++appended) {
    if (!sink.append(numbered(appended))) {
      ++refused;
    }
  }
  EXPECT_TRUE(sink.pending());
  EXPECT_GT(refused, 100);
  EXPECT_EQ(counter.load(), static_cast<std::uint64_t>(refused));
  // The reader takes a little at a time: the sink's big writes are cut mid-line, and the rest of
  // each line goes out first next time.
  std::string got;
  for (int round = 0; round < 1000 && (sink.pending() || !got.empty()); ++round) {
    std::string part = p.read(1000);
    if (part.empty() && !sink.pending()) {
      break;
    }
    got += part;
    sink.flush();
  }
  got += p.read();
  EXPECT_FALSE(sink.pending());
  int lines = checkLines(got);
  EXPECT_EQ(lines + refused, appended);
  EXPECT_EQ(sink.takeDropped(), static_cast<std::uint64_t>(refused));
  EXPECT_EQ(sink.takeDropped(), 0u);
  // Drained: lines go out at once again.
  EXPECT_TRUE(sink.append(numbered(1000)));
  EXPECT_FALSE(sink.pending());
  EXPECT_EQ(p.read(), numbered(1000));
}

TEST(LineSink, ReaderGoneDropsWhatWaitsAndCountsIt) {
  std::signal(SIGPIPE, SIG_IGN);
  Pipe p;
  LineSink sink(4096);
  sink.attach(p.w);
  int n = 0;
  while (!sink.pending()) {
    ASSERT_TRUE(sink.append(numbered(n++)));
  }
  ASSERT_TRUE(sink.append(numbered(n++)));
  close(p.r);
  p.r = -1;
  sink.flush();  // EPIPE: nothing will ever take them
  EXPECT_FALSE(sink.pending());
  EXPECT_EQ(sink.takeDropped(), 2u);
  EXPECT_FALSE(sink.append(numbered(n++)));
  EXPECT_EQ(sink.takeDropped(), 1u);
}

TEST(LineSink, ManyProcessesSharingAPipeNeverInterleaveInsideALine) {
  Pipe p;
  LineSink sink(16384);
  sink.attach(p.w);
  int n = 0;
  while (!sink.pending()) {
    ASSERT_TRUE(sink.append(numbered(n++)));
  }
  for (int i = 0; i < 100; ++i) {
    ASSERT_TRUE(sink.append(numbered(n++)));
  }
  // Each write the sink makes to a pipe is whole lines of at most PIPE_BUF bytes, which the
  // kernel never splits or mixes with another writer's.
  std::string got = p.read();
  while (sink.pending()) {
    sink.flush();
    std::string part = p.read();
    ASSERT_FALSE(part.empty());
    EXPECT_EQ(part.back(), '\n') << "a write to the pipe ended inside a line";
    got += part;
  }
  EXPECT_EQ(checkLines(got), n);
}

TEST(LineSink, NewDescriptorGetsWholeLinesOnly) {
  // A socket, unlike a pipe, takes part of a write: the rest of that line waits.
  int a[2];
  ASSERT_EQ(socketpair(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0, a), 0);
  int small = 4096;
  setsockopt(a[1], SOL_SOCKET, SO_SNDBUF, &small, sizeof(small));
  Pipe b;
  LineSink sink(65536);
  sink.attach(a[1]);
  int n = 0;
  while (!sink.pending()) {
    ASSERT_TRUE(sink.append(numbered(n++)));
  }
  for (int i = 0; i < 100; ++i) {
    ASSERT_TRUE(sink.append(numbered(n++)));
  }
  std::string first;
  char buf[65536];
  for (int round = 0; round < 100; ++round) {
    ssize_t got = recv(a[0], buf, sizeof(buf), MSG_DONTWAIT);
    if (got > 0) {
      first.append(buf, static_cast<std::size_t>(got));
    }
    if (!first.empty() && first.back() != '\n') {
      break;
    }
    sink.flush();
  }
  ASSERT_NE(first.back(), '\n') << "the test needs a line cut by the socket";
  sink.attach(b.w);  // a reopen: the cut line's rest is dropped, not written to the new file
  std::string second = b.read();
  while (sink.pending()) {
    sink.flush();
    second += b.read();
  }
  int whole = checkLines(first.substr(0, first.rfind('\n') + 1));
  int moved = checkLines(second);
  EXPECT_EQ(whole + 1 + moved, n);
  EXPECT_EQ(sink.takeDropped(), 1u);
  close(a[0]);
  close(a[1]);
}

TEST(Log, StalledFifoNeverBlocksAndTheDropIsReportedOnceItDrains) {
  char dir[] = "/tmp/pgproxy-log-XXXXXX";
  ASSERT_NE(mkdtemp(dir), nullptr);
  std::string fifo = std::string(dir) + "/log";
  ASSERT_EQ(mkfifo(fifo.c_str(), 0600), 0);
  int reader = open(fifo.c_str(), O_RDONLY | O_NONBLOCK | O_CLOEXEC);
  ASSERT_GE(reader, 0);
  fcntl(reader, F_SETPIPE_SZ, 4096);
  std::atomic<std::uint64_t> dropped{0};
  setDropCounters(&dropped, nullptr);
  ASSERT_TRUE(setFile(fifo).ok());
  // Nobody reads: a blocking write would hang here.
  for (int i = 0; i < 5000; ++i) {
    LOG_INFO("stalled line %d %s", i, std::string(100, 'y').c_str());
  }
  int fds[2];
  ASSERT_EQ(pendingFds(fds), 1);
  EXPECT_GT(dropped.load(), 0u);
  std::string got;
  char buf[65536];
  for (int round = 0; round < 10000 && pendingFds(fds) > 0; ++round) {
    ssize_t n = read(reader, buf, sizeof(buf));
    if (n > 0) {
      got.append(buf, static_cast<std::size_t>(n));
    }
    flushPending();
  }
  for (ssize_t n; (n = read(reader, buf, sizeof(buf))) > 0;) {
    got.append(buf, static_cast<std::size_t>(n));
  }
  EXPECT_EQ(pendingFds(fds), 0);
  std::string notice =
      "dropped " + std::to_string(dropped.load()) + " lines: the log was not writable";
  EXPECT_NE(got.find(notice), std::string::npos)
      << got.substr(got.size() > 2000 ? got.size() - 2000 : 0);
  EXPECT_NE(got.find("stalled line 0 "), std::string::npos);
  ASSERT_TRUE(setFile("").ok());
  setDropCounters(nullptr, nullptr);
  close(reader);
  unlink(fifo.c_str());
  rmdir(dir);
}

}  // namespace
}  // namespace pgproxy::log
