#include "pgproxy/log/line_sink.h"

#include <sys/socket.h>
#include <sys/stat.h>
#include <unistd.h>

#include <algorithm>
#include <cerrno>
#include <climits>
#include <cstring>

namespace pgproxy::log {

LineSink::LineSink(std::size_t capacity) : buf_(new char[capacity]), capacity_(capacity) {}

void LineSink::attach(int fd) {
  if (fd != fd_ && mid_line_) {
    // The rest of a line the old descriptor took part of: it would start the new target with
    // half a line.
    const char* start = buf_.get() + head_;
    const char* nl = static_cast<const char*>(std::memchr(start, '\n', size_));
    std::size_t rest = nl ? static_cast<std::size_t>(nl - start) + 1 : size_;
    head_ += rest;
    size_ -= rest;
    mid_line_ = false;
    countDropped(1);
  }
  fd_ = fd;
  struct stat st;
  socket_ = fd >= 0 && fstat(fd, &st) == 0 && S_ISSOCK(st.st_mode);
  if (size_ > 0) {
    flush();
  }
}

ssize_t LineSink::writeSome(const char* data, std::size_t len) {
  if (socket_) {
    return ::send(fd_, data, len, MSG_DONTWAIT | MSG_NOSIGNAL);
  }
  return ::write(fd_, data, len);
}

void LineSink::countDropped(std::uint64_t lines) {
  dropped_ += lines;
  if (counter_) {
    counter_->fetch_add(lines, std::memory_order_relaxed);
  }
}

void LineSink::dropAll() {
  std::uint64_t lines =
      static_cast<std::uint64_t>(std::count(buf_.get() + head_, buf_.get() + head_ + size_, '\n'));
  countDropped(lines);
  head_ = size_ = 0;
  mid_line_ = false;
}

bool LineSink::append(std::string_view line) {
  if (size_ > 0) {
    flush();  // one attempt per line while stalled: what the reader freed is used at once
  }
  if (size_ == 0) {
    head_ = 0;
    std::size_t done = 0;
    while (done < line.size()) {
      ssize_t n = writeSome(line.data() + done, line.size() - done);
      if (n > 0) {
        done += static_cast<std::size_t>(n);
        continue;
      }
      if (n < 0 && errno == EINTR) {
        continue;
      }
      if (n < 0 && (errno == EAGAIN || errno == EWOULDBLOCK)) {
        break;
      }
      countDropped(1);  // the descriptor is broken (EPIPE, ENOSPC, closed)
      return false;
    }
    if (done == line.size()) {
      return true;
    }
    mid_line_ = done > 0;
    line.remove_prefix(done);
    if (line.size() > capacity_) {
      countDropped(1);  // only a sink smaller than one line gets here
      return false;
    }
  } else if (line.size() > capacity_ - size_) {
    countDropped(1);
    return false;
  }
  if (head_ + size_ + line.size() > capacity_) {
    std::memmove(buf_.get(), buf_.get() + head_, size_);
    head_ = 0;
  }
  std::memcpy(buf_.get() + head_ + size_, line.data(), line.size());
  size_ += line.size();
  return true;
}

// At most PIPE_BUF bytes of whole lines per write: a pipe takes such a write whole or not at all,
// so lines from the processes sharing it never interleave inside a line, as with the single
// write per line of a sink that never waits.
std::size_t LineSink::nextChunk() const {
  if (size_ <= PIPE_BUF) {
    return size_;
  }
  const char* start = buf_.get() + head_;
  const void* nl = memrchr(start, '\n', PIPE_BUF);
  return nl ? static_cast<std::size_t>(static_cast<const char*>(nl) - start) + 1 : PIPE_BUF;
}

void LineSink::flush() {
  while (size_ > 0 && fd_ >= 0) {
    ssize_t n = writeSome(buf_.get() + head_, nextChunk());
    if (n > 0) {
      head_ += static_cast<std::size_t>(n);
      size_ -= static_cast<std::size_t>(n);
      mid_line_ = buf_[head_ - 1] != '\n';
      continue;
    }
    if (n < 0 && errno == EINTR) {
      continue;
    }
    if (n < 0 && (errno == EAGAIN || errno == EWOULDBLOCK)) {
      return;
    }
    dropAll();
  }
  if (size_ == 0) {
    head_ = 0;
    mid_line_ = false;
  }
}

void LineSink::abandon() {
  if (size_ > 0) {
    dropAll();
  }
}

void LineSink::discard() {
  head_ = size_ = 0;
  mid_line_ = false;
  dropped_ = 0;
}

std::uint64_t LineSink::takeDropped() {
  std::uint64_t n = dropped_;
  dropped_ = 0;
  return n;
}

}  // namespace pgproxy::log
