#include "pgproxy/log/loop_flusher.h"

#include "pgproxy/log/log.h"

namespace pgproxy::log {
namespace {

LoopFlusher* g_flusher = nullptr;

// A descriptor epoll refuses (none that can return EAGAIN should be) is retried on a timer.
constexpr timeval kRetry{0, 50 * 1000};

}  // namespace

LoopFlusher::LoopFlusher(event_base* base) : base_(base) {
  g_flusher = this;
  setPendingHook(onPending);
  rearm();
}

LoopFlusher::~LoopFlusher() {
  setPendingHook(nullptr);
  g_flusher = nullptr;
  for (event*& ev : events_) {
    if (ev) {
      event_free(ev);
      ev = nullptr;
    }
  }
}

void LoopFlusher::onPending() {
  if (g_flusher) {
    g_flusher->rearm();
  }
}

void LoopFlusher::onWritable(evutil_socket_t, short, void* arg) {
  flushPending();
  static_cast<LoopFlusher*>(arg)->rearm();
}

// Events are made afresh each time: a reopen may have closed a descriptor and reused its number.
void LoopFlusher::rearm() {
  for (event*& ev : events_) {
    if (ev) {
      event_free(ev);
      ev = nullptr;
    }
  }
  int fds[2];
  int n = pendingFds(fds);
  for (int i = 0; i < n; ++i) {
    events_[i] = event_new(base_, fds[i], EV_WRITE, onWritable, this);
    if (events_[i] && event_add(events_[i], nullptr) == 0) {
      continue;
    }
    if (events_[i]) {
      event_free(events_[i]);
    }
    events_[i] = evtimer_new(base_, onWritable, this);
    if (events_[i]) {
      evtimer_add(events_[i], &kRetry);
    }
  }
}

}  // namespace pgproxy::log
