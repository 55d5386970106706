// splice: kernel. Once a TLS passthrough session's backend has answered, its two sockets join
// the BPF sockmap and the kernel moves the bytes (net/kernel_splice.h). The session keeps its
// read events: they fire for EOF and errors (so that session end, half-close, tcp_keepalive and
// tcp_user_timeout behave as in user mode) and for the bytes of a paused direction.
//
// A direction pauses when its peer is slow: the kernel takes the socket out of the program's reach
// by itself (src/bpf/splice.bpf.c) and pgproxy's bounded relay reads it, whose backpressure closes
// the sender's window. Ordering is the one hazard: bytes the kernel redirected may still wait in
// its queue in front of the peer when pgproxy reads newer ones, so pgproxy writes nothing to a
// socket until that queue has drained (polled: it empties at the peer's pace), and gives a
// direction back to the kernel only when it holds none of its bytes.
#include <event2/event.h>
#include <linux/tcp.h>
#include <netinet/in.h>
#include <sys/ioctl.h>
#include <sys/socket.h>

#include "pgproxy/base/clock.h"
#include "pgproxy/log/log.h"
#include "pgproxy/net/kernel_splice.h"
#include "pgproxy/session/session.h"

namespace pgproxy::session {

namespace ks = net::kernel_splice;

namespace {
// How often a direction waiting for the kernel's queue to drain looks again. The queue holds at
// most kQueueLimit bytes, so this is a few milliseconds at worst.
constexpr timeval kDrainPoll{0, 2000};
// Attempts to join the sockmap (see maybeEnterKernel), one per kDrainPoll: 100 ms in all.
constexpr unsigned kJoinTries = 50;
// TCP states (tcpi_state) of a socket that has received its peer's FIN (the kernel's
// include/net/tcp_states.h; <netinet/tcp.h> names them too but clashes with <linux/tcp.h>).
constexpr std::uint8_t kTcpTimeWait = 6, kTcpCloseWait = 8, kTcpLastAck = 9, kTcpClosing = 11;
}  // namespace

Session::KernelLink::~KernelLink() {
  if (timer) {
    event_free(timer);
  }
}

bool Session::kernelWanted() const {
  // TLS passthrough only: pgproxy reads nothing of those sessions after routing, while it keeps
  // reading plaintext (the cancel key) and terminated ones (it holds their TLS).
  return mode_ == Mode::kPassthrough && !terminated() && !backend_ssl_ && mapping_ != SIZE_MAX &&
         ks::available() &&
         ctx_.config->spliceOf(ctx_.config->mappings[mapping_]) != config::SpliceMode::kUser;
}

Session::KernelLink& Session::kernelLink() {
  if (!kernel_) {
    kernel_ = std::make_unique<KernelLink>();
    kernel_->join_tries = kJoinTries;
  }
  return *kernel_;
}

void Session::armKernelTimer() {
  KernelLink& k = *kernel_;
  if (!k.timer) {
    k.timer = evtimer_new(ctx_.base, onKernelTimer, this);
  }
  evtimer_add(k.timer, &kDrainPoll);
}

void Session::maybeEnterKernel() {
  if ((kernel_ && (kernel_->joined || kernel_->join_tries == 0)) || state_ != State::kSplice ||
      !kernelWanted() || !to_client_.empty() || !to_backend_.empty() || client_eof_ ||
      backend_eof_ || !replay_.empty()) {
    return;
  }
  // Only where pgproxy's last read of each socket emptied it: the kernel hands the program whole
  // segments, and one pgproxy had read part of would reach the peer twice. And with an exact count
  // of what each socket has taken so far (no ACK racing the reads). Failing either, the session
  // tries again shortly (the timer), a bounded number of times, and stays in user space if it
  // never gets the chance.
  KernelLink& k = kernelLink();
  --k.join_tries;
  auto toBackend = ks::handed(backend_fd_, true), toClient = ks::handed(client_fd_, true);
  auto fromClient = ks::taken(client_fd_, true), fromBackend = ks::taken(backend_fd_, true);
  if (!k.boundary[0] || !k.boundary[1] || !toBackend || !toClient || !fromClient || !fromBackend) {
    if (k.join_tries > 0) {
      armKernelTimer();
    }
    return;
  }
  k.join_tries = 0;
  k.cookie[0] = ks::cookie(client_fd_);
  k.cookie[1] = ks::cookie(backend_fd_);
  k.base[0] = *toBackend;
  k.base[1] = *toClient;
  k.taken0[0] = *fromClient;
  k.taken0[1] = *fromBackend;
  std::string why;
  if (k.cookie[0] == 0 || k.cookie[1] == 0 ||
      !ks::join(client_fd_, k.cookie[0], backend_fd_, k.cookie[1], why)) {
    // Full maps, or a socket the kernel could not pause: worth a word, but not one per session.
    static std::uint64_t warned_ms = 0;
    if (base::logDue(warned_ms, 60000)) {
      LOG_WARN(
          "session %llu: stays in user space: the in-kernel splice refused it (%s); logged "
          "once a minute",
          static_cast<unsigned long long>(id_), why.c_str());
    }
    return;
  }
  k.joined = true;
  ctx_.metrics.add(metrics::Counter::kKernelSpliced);
  LOG_DEBUG("session %llu: spliced in the kernel", static_cast<unsigned long long>(id_));
}

bool Session::kernelMayWrite(bool from_client, std::size_t n) {
  if (!kernel_ || !kernel_->joined) {
    return true;
  }
  KernelLink& k = *kernel_;
  int side = from_client ? 0 : 1;
  k.read[side] += n;
  if (k.relaying[side]) {
    return true;
  }
  if (!k.paused[side]) {
    // Bytes reach pgproxy only from a socket the kernel paused (its peer is slow).
    k.paused[side] = true;
    ctx_.metrics.add(metrics::Counter::kKernelFallbacks);
    LOG_DEBUG("session %llu: the %s's bytes paused in the kernel: its peer is slow",
              static_cast<unsigned long long>(id_), from_client ? "client" : "backend");
  }
  if (!kernelDrained(side)) {
    return false;
  }
  k.relaying[side] = true;
  return true;
}

bool Session::kernelDrained(int side) {
  KernelLink& k = *kernel_;
  auto d = ks::direction(k.cookie[side]);
  auto h = ks::handed(side == 0 ? backend_fd_ : client_fd_);
  if (!d || !h) {
    return true;  // a socket in error: nothing more will be delivered anyway
  }
  return *h >= k.base[side] + k.written[side] + d->total;
}

void Session::kernelRead(bool from_client, bool drained) {
  // Before the first attempt to join (the backend has not answered), only a read that stopped
  // mid-stream needs remembering: the link starts with both boundaries set.
  if (kernel_ || (!drained && kernelWanted())) {
    kernelLink().boundary[from_client ? 0 : 1] = drained;
  }
}

void Session::kernelWrote(bool to_client, std::size_t n) {
  if (kernel_ && kernel_->joined) {
    kernel_->written[to_client ? 1 : 0] += n;
  }
}

void Session::kernelWait(bool from_client) {
  KernelLink& k = *kernel_;
  k.waiting[from_client ? 0 : 1] = true;
  event_del(from_client ? client_read_ : backend_read_);  // backpressure, as with a full peer
  armKernelTimer();
}

void Session::kernelRearm(bool from_client) {
  if (!kernel_ || !kernel_->joined) {
    return;
  }
  KernelLink& k = *kernel_;
  int side = from_client ? 0 : 1;
  int fd = from_client ? client_fd_ : backend_fd_;
  if (!k.paused[side] || !k.relaying[side] || k.waiting[side] || !k.boundary[side] ||
      (from_client ? client_eof_ : backend_eof_)) {
    return;
  }
  // Whatever arrived since pgproxy's last read goes to the program at once: with a full receive
  // queue that is more than the kernel should queue in front of a slow peer, so pgproxy keeps
  // relaying until the sender has slowed down.
  int unread = 0;
  if (ioctl(fd, FIONREAD, &unread) != 0 || static_cast<std::uint64_t>(unread) >= ks::kQueueLimit) {
    return;
  }
  if (ks::resume(fd, k.cookie[side], k.cookie[1 - side], ++k.gen[side])) {
    k.paused[side] = false;
    k.relaying[side] = false;
    LOG_DEBUG("session %llu: the %s's bytes move in the kernel again",
              static_cast<unsigned long long>(id_), from_client ? "client" : "backend");
  }
}

bool Session::kernelEofReady(bool client_side) {
  if (!kernel_ || !kernel_->joined) {
    return true;
  }
  KernelLink& k = *kernel_;
  int side = client_side ? 0 : 1;
  if (kernelDrained(side)) {
    k.eof_due[side] = false;
    return true;
  }
  k.eof_due[side] = true;
  armKernelTimer();
  return false;
}

bool Session::kernelSawFin() const {
  if (!kernel_ || !kernel_->joined) {
    return false;
  }
  for (int fd : {client_fd_, backend_fd_}) {
    tcp_info info{};
    socklen_t len = sizeof(info);
    if (getsockopt(fd, IPPROTO_TCP, TCP_INFO, &info, &len) == 0 &&
        (info.tcpi_state == kTcpCloseWait || info.tcpi_state == kTcpLastAck ||
         info.tcpi_state == kTcpClosing || info.tcpi_state == kTcpTimeWait)) {
      return true;
    }
  }
  return false;
}

void Session::onKernelTimer(int, short, void* arg) {
  auto* s = static_cast<Session*>(arg);
  KernelLink& k = *s->kernel_;
  if (!k.joined) {
    s->maybeEnterKernel();  // another try at joining
    return;
  }
  bool again = false;
  for (int side = 0; side < 2; ++side) {
    bool from_client = side == 0;
    if (!k.waiting[side] && !k.eof_due[side]) {
      continue;
    }
    if (!s->kernelDrained(side)) {
      again = true;
      continue;
    }
    if (k.waiting[side]) {
      k.waiting[side] = false;
      k.relaying[side] = true;
      // The held bytes go now; when the peer has taken them the source is read again.
      if (!s->flush(!from_client)) {
        return;  // the session was closed
      }
    }
    if (k.eof_due[side]) {
      k.eof_due[side] = false;
      if (from_client) {
        if (s->to_backend_.empty()) {
          ::shutdown(s->backend_fd_, SHUT_WR);  // the client's half-close, after its bytes
        }
      } else if (s->to_client_.empty()) {
        s->close(Outcome::kOk);
        return;
      }
    }
  }
  if (again) {
    s->armKernelTimer();
  }
}

bool Session::syncKernelBytes() {
  if (!kernel_ || !kernel_->joined) {
    return false;
  }
  KernelLink& k = *kernel_;
  bool moved = false;
  for (int side = 0; side < 2; ++side) {
    auto d = ks::direction(k.cookie[side]);
    if (!d || d->total <= k.counted[side]) {
      continue;
    }
    std::uint64_t n = d->total - k.counted[side];
    k.counted[side] = d->total;
    moved = true;
    (side == 0 ? bytes_up_ : bytes_down_) += n;
    ctx_.metrics.add(
        metricIndex(),
        side == 0 ? metrics::MappingCounter::kBytesUp : metrics::MappingCounter::kBytesDown, n);
  }
  return moved;
}

void Session::checkKernelDelivery() {
  // Every byte a spliced socket's reader took was either redirected by the program or read by
  // pgproxy. Anything else is a segment the kernel dropped after TCP had acknowledged it: the
  // stream is broken (TLS will say so to the client and server). Read in this order (taken
  // first, the program's count last) a concurrent segment can only hide a loss, never invent
  // one.
  KernelLink& k = *kernel_;
  for (int side = 0; side < 2; ++side) {
    auto taken = ks::taken(side == 0 ? client_fd_ : backend_fd_);
    auto d = ks::direction(k.cookie[side]);
    // +1: a FIN the program took counts once in the sequence space FIONREAD reads (copied
    // past it) and never in tcpi_bytes_received; a lost segment is far more than a byte.
    if (!taken || !d) {
      continue;
    }
    std::uint64_t accounted = k.taken0[side] + d->total + k.read[side];
    if (*taken <= accounted + 1) {
      continue;
    }
    std::uint64_t lost = *taken - accounted;
    ctx_.metrics.add(metrics::Counter::kKernelLostBytes, lost);
    LOG_ERROR(
        "session %llu: the kernel lost %llu byte(s) of the %s's stream: an in-kernel splice "
        "defect; please report it with your kernel version (splice: user avoids it)",
        static_cast<unsigned long long>(id_), static_cast<unsigned long long>(lost),
        side == 0 ? "client" : "backend");
  }
}

bool Session::leaveKernel() {
  if (!kernel_ || !kernel_->joined) {
    return false;
  }
  syncKernelBytes();
  checkKernelDelivery();
  ks::leave(kernel_->cookie[0], kernel_->cookie[1]);
  kernel_.reset();
  return true;
}

}  // namespace pgproxy::session
