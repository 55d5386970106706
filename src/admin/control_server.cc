#include "pgproxy/admin/control_server.h"

#include <event2/event.h>
#include <sys/socket.h>
#include <sys/un.h>
#include <unistd.h>

#include <algorithm>
#include <cerrno>
#include <cstddef>
#include <cstring>

#include "pgproxy/base/text.h"
#include "pgproxy/log/log.h"

namespace pgproxy::admin {
namespace {

constexpr int kRequestTimeoutS = 2;

socklen_t abstractAddress(std::uint64_t instance, std::size_t slot, sockaddr_un& sa) {
  std::memset(&sa, 0, sizeof(sa));
  sa.sun_family = AF_UNIX;
  std::string name = controlSocketName(instance, slot);
  std::memcpy(sa.sun_path + 1, name.data(), name.size());  // sun_path[0] = 0: abstract
  return static_cast<socklen_t>(offsetof(sockaddr_un, sun_path) + 1 + name.size());
}

bool wouldBlock(int err) {
  return err == EAGAIN || err == EWOULDBLOCK;
}

enum class Io { kBlocked, kDone, kFailed };

// Appends what the socket has to `in`, up to `max` bytes in all. kBlocked: nothing more for
// now; kDone: the peer closed (or `max` is reached); kFailed: errno says why.
Io readInto(int fd, std::string& in, std::size_t max) {
  char buf[16384];
  while (in.size() < max) {
    ssize_t n = ::read(fd, buf, std::min(sizeof(buf), max - in.size()));
    if (n < 0 && errno == EINTR) {
      continue;
    }
    if (n < 0) {
      return wouldBlock(errno) ? Io::kBlocked : Io::kFailed;
    }
    if (n == 0) {
      return Io::kDone;
    }
    in.append(buf, static_cast<std::size_t>(n));
  }
  return Io::kDone;
}

// Sends `out` from `sent` on. kBlocked: the rest waits for the socket to take it.
Io sendFrom(int fd, const std::string& out, std::size_t& sent) {
  while (sent < out.size()) {
    ssize_t n = ::send(fd, out.data() + sent, out.size() - sent, MSG_NOSIGNAL);
    if (n < 0 && errno == EINTR) {
      continue;
    }
    if (n < 0) {
      return wouldBlock(errno) ? Io::kBlocked : Io::kFailed;
    }
    sent += static_cast<std::size_t>(n);
  }
  return Io::kDone;
}

}  // namespace

// ---- the worker's side ----

struct ControlServer::Conn {
  Conn(ControlServer* s, int f) : server(s), fd(f) {}
  ControlServer* server;
  int fd;
  event* ev = nullptr;  // read until the request is in, then write until the reply is out
  event* timer = nullptr;
  std::string in, out;
  std::size_t sent = 0;
  Conn* next = nullptr;
  Conn* prev = nullptr;

  static void onEvent(int, short what, void* arg) {
    auto* c = static_cast<Conn*>(arg);
    if (what & EV_TIMEOUT) {
      c->close();
      return;
    }
    if (c->out.empty()) {
      c->read();
    } else {
      c->write();
    }
  }

  void read() {
    // One byte past the largest request: a peer that sends more is refused, not waited for.
    Io r = readInto(fd, in, kMaxControlRequest + 1);
    ControlRequest req;
    Decoded d = decodeRequest(in, req);
    if (d == Decoded::kNeedMore && r == Io::kBlocked) {
      return;  // the read event is armed
    }
    if (d != Decoded::kDone) {
      close();
      return;
    }
    out = encodeReply(server->respond_(req));
    event_del(ev);
    event_assign(ev, server->base_, fd, EV_WRITE | EV_PERSIST, onEvent, this);
    event_add(ev, nullptr);
    write();
  }

  void write() {
    if (sendFrom(fd, out, sent) != Io::kBlocked) {
      close();  // all sent, or the peer is gone
    }
  }

  void close() {
    if (prev) {
      prev->next = next;
    } else {
      server->conns_ = next;
    }
    if (next) {
      next->prev = prev;
    }
    event_free(ev);
    event_free(timer);
    ::close(fd);
    delete this;
  }
};

ControlServer::ControlServer(event_base* base, std::uint64_t instance, std::size_t slot,
                             Responder respond)
    : base_(base), respond_(std::move(respond)) {
  int fd = socket(AF_UNIX, SOCK_STREAM | SOCK_NONBLOCK | SOCK_CLOEXEC, 0);
  sockaddr_un sa;
  socklen_t len = abstractAddress(instance, slot, sa);
  if (fd < 0 || bind(fd, reinterpret_cast<sockaddr*>(&sa), len) != 0 || listen(fd, 64) != 0) {
    LOG_ERROR(
        "cannot open the control socket %s: %s (SHOW CLIENTS and KILL will miss this "
        "worker)",
        controlSocketName(instance, slot).c_str(), base::errnoText(errno).c_str());
    if (fd >= 0) {
      ::close(fd);
    }
    return;
  }
  fd_ = fd;
  accept_ = event_new(base, fd_, EV_READ | EV_PERSIST, onAccept, this);
  event_add(accept_, nullptr);
}

ControlServer::~ControlServer() {
  while (conns_) {
    conns_->close();
  }
  if (accept_) {
    event_free(accept_);
  }
  if (fd_ >= 0) {
    ::close(fd_);
  }
}

void ControlServer::onAccept(int fd, short, void* arg) {
  auto* s = static_cast<ControlServer*>(arg);
  for (;;) {
    int c = accept4(fd, nullptr, nullptr, SOCK_NONBLOCK | SOCK_CLOEXEC);
    if (c < 0) {
      return;  // EAGAIN, or out of descriptors: the peer's deadline covers it
    }
    ucred cred{};
    socklen_t clen = sizeof(cred);
    if (getsockopt(c, SOL_SOCKET, SO_PEERCRED, &cred, &clen) != 0 ||
        (cred.uid != geteuid() && cred.uid != 0)) {
      ::close(c);  // abstract sockets have no file permissions: the peer's user is the check
      continue;
    }
    auto* conn = new Conn(s, c);
    conn->ev = event_new(s->base_, c, EV_READ | EV_PERSIST, Conn::onEvent, conn);
    conn->timer = evtimer_new(s->base_, Conn::onEvent, conn);
    timeval tv{kRequestTimeoutS, 0};
    evtimer_add(conn->timer, &tv);
    event_add(conn->ev, nullptr);
    conn->next = s->conns_;
    if (s->conns_) {
      s->conns_->prev = conn;
    }
    s->conns_ = conn;
  }
}

// ---- the asking side ----

struct ControlGather::Leg {
  Leg(ControlGather* g, Target t) : gather(g), target(t) {}
  ControlGather* gather;
  Target target;
  int fd = -1;
  event* ev = nullptr;
  std::string out, in;
  std::size_t sent = 0;
  bool done = false;
  ControlReply reply;
  std::string why;  // set when it failed

  static void onEvent(int, short, void* arg) {
    auto* l = static_cast<Leg*>(arg);
    if (l->sent < l->out.size()) {
      l->write();
    } else {
      l->read();
    }
  }

  void start(event_base* base, std::uint64_t instance) {
    fd = socket(AF_UNIX, SOCK_STREAM | SOCK_NONBLOCK | SOCK_CLOEXEC, 0);
    sockaddr_un sa;
    socklen_t len = abstractAddress(instance, target.slot, sa);
    if (fd < 0 || (connect(fd, reinterpret_cast<sockaddr*>(&sa), len) != 0 && errno != EAGAIN &&
                   errno != EINPROGRESS)) {
      fail("cannot reach its control socket: " + base::errnoText(errno));
      return;
    }
    ev = event_new(base, fd, EV_WRITE | EV_PERSIST, onEvent, this);
    event_add(ev, nullptr);
  }

  void write() {
    Io r = sendFrom(fd, out, sent);
    if (r == Io::kBlocked) {
      return;
    }
    if (r == Io::kFailed) {
      fail("cannot send to it: " + base::errnoText(errno));
      return;
    }
    event_del(ev);
    event_assign(ev, event_get_base(ev), fd, EV_READ | EV_PERSIST, onEvent, this);
    event_add(ev, nullptr);
  }

  void read() {
    Io r = readInto(fd, in, kMaxControlReply + 1);
    if (r == Io::kFailed) {
      fail("cannot read its answer: " + base::errnoText(errno));
      return;
    }
    Decoded d = decodeReply(in, reply);
    if (d == Decoded::kDone) {
      finish();
    } else if (d == Decoded::kBad) {
      fail("its answer is malformed");
    } else if (r == Io::kDone) {
      fail("it closed the connection without a whole answer");
    }  // else: more is coming, the read event is armed
  }

  void fail(std::string reason) {
    why = std::move(reason);
    finish();
  }

  void finish() {
    release();
    done = true;
    gather->legDone(this);
  }

  void release() {
    if (ev) {
      event_free(ev);
      ev = nullptr;
    }
    if (fd >= 0) {
      ::close(fd);
      fd = -1;
    }
    std::string().swap(in);
  }
};

ControlGather::ControlGather(event_base* base, std::uint64_t instance,
                             const std::vector<Target>& targets, const ControlRequest& request,
                             std::uint64_t deadline_ms, Done done)
    : done_(std::move(done)) {
  timer_ = evtimer_new(base, onDeadline, this);
  const std::string frame = encodeRequest(request);
  pending_ = targets.size();
  for (const Target& t : targets) {
    legs_.push_back(std::make_unique<Leg>(this, t));
    legs_.back()->out = frame;
  }
  // Started after the list is complete: a leg that fails at once calls legDone.
  for (auto& leg : legs_) {
    leg->start(base, instance);
  }
  timeval tv{static_cast<time_t>(deadline_ms / 1000),
             static_cast<suseconds_t>(deadline_ms % 1000 * 1000)};
  if (pending_ == 0) {
    tv = timeval{0, 0};  // nothing to wait for: answer from the loop, not from here
  }
  evtimer_add(timer_, &tv);
}

ControlGather::~ControlGather() {
  for (auto& leg : legs_) {
    leg->release();
  }
  event_free(timer_);
}

void ControlGather::legDone(Leg* leg) {
  (void)leg;
  --pending_;
  if (pending_ == 0) {
    timeval now{0, 0};
    evtimer_add(timer_, &now);  // finish from the loop: the leg's caller may be on the stack
  }
}

void ControlGather::onDeadline(int, short, void* arg) {
  static_cast<ControlGather*>(arg)->finish();
}

void ControlGather::finish() {
  for (auto& leg : legs_) {
    if (!leg->done) {
      leg->why = "no answer before the deadline (stopped or stuck)";
      leg->release();
      leg->done = true;
    }
    if (!leg->why.empty()) {
      result_.missing.push_back({leg->target.slot, leg->target.pid, leg->why});
    } else {
      result_.parts.push_back(std::move(leg->reply));
    }
  }
  pending_ = 0;
  Done done = std::move(done_);
  Gathered result = std::move(result_);
  done(std::move(result));  // may destroy this gather: nothing after
}

Poller::Poller(event_base* base, std::function<bool()> ready, std::function<void()> done)
    : ready_(std::move(ready)), done_(std::move(done)) {
  timer_ = evtimer_new(base, onTick, this);
  timeval now{0, 0};
  evtimer_add(timer_, &now);  // the first look from the loop, never from here
}

Poller::~Poller() {
  event_free(timer_);
}

void Poller::onTick(int, short, void* arg) {
  auto* p = static_cast<Poller*>(arg);
  if (!p->ready_()) {
    timeval tick{0, 20'000};
    evtimer_add(p->timer_, &tick);
    return;
  }
  std::function<void()> done = std::move(p->done_);
  done();  // may destroy this poller: nothing after
}

}  // namespace pgproxy::admin
