#pragma once

#include <event2/event.h>

namespace pgproxy::log {

// Ties the log's waiting lines (log.h) to a libevent loop: while a log's descriptor has lines
// waiting, a write event on it flushes them when it becomes writable. One per process (it
// installs itself as the log's pending hook); destroy it before its event_base.
class LoopFlusher {
 public:
  explicit LoopFlusher(event_base* base);
  ~LoopFlusher();
  LoopFlusher(const LoopFlusher&) = delete;
  LoopFlusher& operator=(const LoopFlusher&) = delete;

 private:
  static void onPending();
  static void onWritable(evutil_socket_t, short, void* arg);
  void rearm();

  event_base* base_;
  event* events_[2] = {nullptr, nullptr};
};

}  // namespace pgproxy::log
