#pragma once

#include <sys/types.h>

#include <atomic>
#include <cstddef>
#include <cstdint>
#include <memory>
#include <string>
#include <string_view>
#include <utility>

namespace pgproxy::log {

// Whole lines on their way to a descriptor that may not take them now (a stalled journald, a full
// pipe): an event loop that logs never waits for the reader. Lines are written at once while the
// descriptor takes them; otherwise they wait in a bounded buffer until it is writable again, and a
// line that does not fit is dropped and counted, never cut. A line is split only where the
// descriptor took part of it (a socket can; a pipe takes up to PIPE_BUF bytes whole or not at
// all); its rest goes out first when it is writable again.
class LineSink {
 public:
  explicit LineSink(std::size_t capacity);
  LineSink(const LineSink&) = delete;
  LineSink& operator=(const LineSink&) = delete;

  // Writes to `fd` from now on; it should be non-blocking (or a regular file, which never waits).
  // Sockets are written with MSG_DONTWAIT, so a shared socket needs no O_NONBLOCK. Lines still
  // waiting for the previous descriptor go to this one, except the rest of a line the previous
  // one took part of (dropped: it would start the new target with half a line).
  void attach(int fd);
  int fd() const { return fd_; }

  // Queues `line` (which ends in '\n') and writes what the descriptor takes now. False when it
  // did not fit and was dropped.
  bool append(std::string_view line);
  // Writes waiting lines while the descriptor takes them.
  void flush();
  bool pending() const { return size_ > 0; }
  // Gives up on waiting lines, counting them as dropped (at exit, after the bounded wait).
  void abandon();
  // Forgets waiting lines without counting them (a forked child: its parent writes them).
  void discard();

  // Lines dropped since the last call; the owner reports them once the sink drained.
  std::uint64_t takeDropped();
  // What the notice about drops calls this target ("the log", "access log \"/path\"").
  void setWhat(std::string what) { what_ = std::move(what); }
  const std::string& what() const { return what_; }
  // Every drop is also added here (a metrics counter in shared memory), when set.
  void setDropCounter(std::atomic<std::uint64_t>* counter) { counter_ = counter; }

 private:
  std::size_t nextChunk() const;
  // One write or send; -1 with errno as write(2).
  ssize_t writeSome(const char* data, std::size_t len);
  void countDropped(std::uint64_t lines);
  // The descriptor failed for good (not EAGAIN): what waits for it is lost.
  void dropAll();

  std::unique_ptr<char[]> buf_;
  std::size_t capacity_;
  std::size_t head_ = 0;   // first waiting byte
  std::size_t size_ = 0;   // waiting bytes
  bool mid_line_ = false;  // the descriptor took part of the first waiting line
  int fd_ = -1;
  bool socket_ = false;
  std::uint64_t dropped_ = 0;
  std::atomic<std::uint64_t>* counter_ = nullptr;
  std::string what_;
};

namespace detail {
// The access log's own file (access_log.cc); idle (no descriptor) when lines go to the main log.
LineSink& accessSink();
// Appends to a sink of this process, telling the loop (setPendingHook) when lines start waiting
// and reporting drops once a sink drained (log.cc).
void appendTo(LineSink& sink, std::string_view line);
// Tells the loop that a sink's descriptor changed.
void sinkReopened();
}  // namespace detail

}  // namespace pgproxy::log
