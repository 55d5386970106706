// splice: kernel. Once a TLS passthrough session's backend has answered, its two sockets join
// the BPF sockmap and the kernel moves the bytes (net/kernel_splice.h). The session keeps its
// read events: they fire for what the program passes up (a slow reader's direction, handed back
// to pgproxy's relay), for EOF and for errors, so that session end, half-close, tcp_keepalive and
// tcp_user_timeout behave as in user mode.
//
// Ordering is the one hazard: bytes the kernel redirected may still wait in its queue in front of
// the peer when pgproxy reads newer ones, so pgproxy writes nothing to a socket until that queue
// has drained (polled: it empties at the peer's pace), and hands a direction back to the kernel
// only when it holds none of its bytes.
#include <event2/event.h>
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
  if (!k.boundary[0] || !k.boundary[1] || !toBackend || !toClient) {
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
  std::string why;
  if (k.cookie[0] == 0 || k.cookie[1] == 0 ||
      !ks::join(client_fd_, k.cookie[0], backend_fd_, k.cookie[1], why)) {
    LOG_DEBUG("session %llu: stays in user space: the in-kernel splice refused it: %s",
              static_cast<unsigned long long>(id_), why.c_str());
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
  // The program passed these bytes up: the peer was slow (or is going away).
  auto d = ks::direction(k.cookie[side]);
  if (d && d->fallbacks > k.fallbacks[side]) {
    ctx_.metrics.add(metrics::Counter::kKernelFallbacks, d->fallbacks - k.fallbacks[side]);
    k.fallbacks[side] = d->fallbacks;
  }
  if (!kernelDrained(side, d)) {
    return false;
  }
  k.relaying[side] = true;
  return true;
}

bool Session::kernelDrained(int side) {
  return kernelDrained(side, ks::direction(kernel_->cookie[side]));
}

bool Session::kernelDrained(int side, const std::optional<ks::Direction>& d) {
  KernelLink& k = *kernel_;
  auto h = ks::handed(side == 0 ? backend_fd_ : client_fd_);
  if (!d || !h) {
    return true;  // a socket in error: nothing more will be delivered anyway
  }
  return *h >= k.base[side] + k.written[side] + d->total;
}

void Session::kernelRead(bool from_client, bool drained) {
  // Before the first attempt to join (the backend has not answered), only a read that stopped
  // mid-stream needs remembering: the link starts with both boundaries set.
  if ((kernel_ && !kernel_->joined) || (!kernel_ && !drained && kernelWanted())) {
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
  if (!k.relaying[side] || k.waiting[side] || (from_client ? client_eof_ : backend_eof_)) {
    return;
  }
  // The program switches back on its next segment, and only if it has passed up no more than
  // pgproxy has read and written by then: nothing can overtake.
  if (ks::arm(k.cookie[side], k.cookie[1 - side], ++k.gen[side], k.read[side])) {
    k.relaying[side] = false;
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

bool Session::leaveKernel() {
  if (!kernel_ || !kernel_->joined) {
    return false;
  }
  syncKernelBytes();
  ks::leave(kernel_->cookie[0], kernel_->cookie[1]);
  kernel_.reset();
  return true;
}

}  // namespace pgproxy::session
