#include "pgproxy/net/kernel_splice.h"

#include <linux/sockios.h>
#include <linux/tcp.h>
#include <netinet/in.h>
#include <sys/ioctl.h>
#include <sys/socket.h>

#include <cerrno>
#include <cstring>
#include <vector>

#include "config.h"
#include "pgproxy/base/text.h"

#ifdef HAVE_KERNEL_SPLICE
#include <bpf/bpf.h>
#include <bpf/libbpf.h>

#include "splice.skel.h"
#endif

namespace pgproxy::net::kernel_splice {

#ifdef HAVE_KERNEL_SPLICE
namespace {

// Mirrors struct ctl in splice.bpf.c.
struct Control {
  std::uint64_t peer = 0;
  std::uint64_t arm_gen = 0;
  std::uint64_t arm_passed = 0;
  std::uint64_t limit = kQueueLimit;
};
static_assert(sizeof(Control) == 32 && sizeof(Direction) == 48);

// Loaded by the master and inherited by every worker; never unloaded (a worker exiting must not
// detach what the others use).
splice_bpf* g_skel = nullptr;
int g_socks = -1, g_ctls = -1, g_dirs = -1;

int quietLibbpf(libbpf_print_level level, const char*, va_list) {
  (void)level;
  return 0;  // the verifier's log is long; load() reports the error in one line
}

bool setControl(std::uint64_t cookie, const Control& c) {
  return bpf_map_update_elem(g_ctls, &cookie, &c, BPF_ANY) == 0;
}

}  // namespace

bool built() {
  return true;
}

bool load(std::string& why) {
  if (g_skel) {
    return true;
  }
  libbpf_set_print(quietLibbpf);
  splice_bpf* skel = splice_bpf__open_and_load();
  if (!skel) {
    why = "the BPF program did not load: " + base::errnoText(errno);
    return false;
  }
  int socks = bpf_map__fd(skel->maps.socks);
  if (bpf_prog_attach(bpf_program__fd(skel->progs.splice_verdict), socks, BPF_SK_SKB_STREAM_VERDICT,
                      0) != 0) {
    why = "the BPF program did not attach: " + base::errnoText(errno);
    splice_bpf__destroy(skel);
    return false;
  }
  g_skel = skel;
  g_socks = socks;
  g_ctls = bpf_map__fd(skel->maps.ctls);
  g_dirs = bpf_map__fd(skel->maps.dirs);
  return true;
}

bool available() {
  return g_skel != nullptr;
}

std::uint64_t cookie(int fd) {
  std::uint64_t c = 0;
  socklen_t len = sizeof(c);
  return getsockopt(fd, SOL_SOCKET, SO_COOKIE, &c, &len) == 0 ? c : 0;
}

bool join(int a, std::uint64_t a_cookie, int b, std::uint64_t b_cookie, std::string& why) {
  if (!g_skel) {
    why = "not loaded";
    return false;
  }
  // The program starts each socket passing up and switches to redirecting on its first segment
  // (arm_gen 1, nothing passed yet), so that state and sockmap entry are in place before then.
  Direction zero;
  Control ca{b_cookie, 1, 0, kQueueLimit}, cb{a_cookie, 1, 0, kQueueLimit};
  std::uint64_t fa = static_cast<std::uint64_t>(a), fb = static_cast<std::uint64_t>(b);
  if (bpf_map_update_elem(g_dirs, &a_cookie, &zero, BPF_ANY) != 0 ||
      bpf_map_update_elem(g_dirs, &b_cookie, &zero, BPF_ANY) != 0 || !setControl(a_cookie, ca) ||
      !setControl(b_cookie, cb) || bpf_map_update_elem(g_socks, &a_cookie, &fa, BPF_ANY) != 0 ||
      bpf_map_update_elem(g_socks, &b_cookie, &fb, BPF_ANY) != 0) {
    why = base::errnoText(errno);
    leave(a_cookie, b_cookie);
    return false;
  }
  // Bytes that arrived before the verdict was attached wait in the receive queue until the next
  // segment wakes the program, which may never come (a client waiting for an answer): changing
  // SO_RCVLOWAT makes TCP signal data-ready now, so the program takes them, in order.
  int one = 1;
  setsockopt(a, SOL_SOCKET, SO_RCVLOWAT, &one, sizeof(one));
  setsockopt(b, SOL_SOCKET, SO_RCVLOWAT, &one, sizeof(one));
  return true;
}

bool arm(std::uint64_t cookie, std::uint64_t peer_cookie, std::uint64_t gen, std::uint64_t passed) {
  return g_skel && setControl(cookie, Control{peer_cookie, gen, passed, kQueueLimit});
}

std::optional<Direction> direction(std::uint64_t cookie) {
  Direction d;
  if (!g_skel || bpf_map_lookup_elem(g_dirs, &cookie, &d) != 0) {
    return std::nullopt;
  }
  return d;
}

std::optional<std::uint64_t> handed(int fd, bool exact) {
  // Acknowledged bytes plus those still in the send queue: two reads, and an ACK between them
  // only makes the sum smaller than the truth, never larger. `exact`: read the acknowledged count
  // again after the queue, and retry until no ACK came between.
  for (int attempt = 0; attempt < 8; ++attempt) {
    tcp_info info{}, again{};
    socklen_t len = sizeof(info);
    int queued = 0;
    if (getsockopt(fd, IPPROTO_TCP, TCP_INFO, &info, &len) != 0 ||
        ioctl(fd, SIOCOUTQ, &queued) != 0) {
      return std::nullopt;
    }
    std::uint64_t sum = info.tcpi_bytes_acked + static_cast<std::uint64_t>(queued);
    if (!exact) {
      return sum;
    }
    len = sizeof(again);
    if (getsockopt(fd, IPPROTO_TCP, TCP_INFO, &again, &len) != 0) {
      return std::nullopt;
    }
    if (again.tcpi_bytes_acked == info.tcpi_bytes_acked) {
      return sum;
    }
  }
  return std::nullopt;  // ACKs kept coming: the caller tries later
}

void leave(std::uint64_t a_cookie, std::uint64_t b_cookie) {
  if (!g_skel) {
    return;
  }
  for (std::uint64_t c : {a_cookie, b_cookie}) {
    bpf_map_delete_elem(g_socks, &c);
    bpf_map_delete_elem(g_ctls, &c);
    bpf_map_delete_elem(g_dirs, &c);
  }
}

std::size_t sweep() {
  if (!g_skel) {
    return 0;
  }
  std::vector<std::uint64_t> gone;
  std::uint64_t key = 0, next = 0;
  const void* prev = nullptr;
  while (bpf_map_get_next_key(g_ctls, prev, &next) == 0) {
    std::uint64_t fd = 0;
    // A closed socket has left the sockmap: its state is a dead worker's leftover.
    if (bpf_map_lookup_elem(g_socks, &next, &fd) != 0 && errno == ENOENT) {
      gone.push_back(next);
    }
    key = next;
    prev = &key;
  }
  for (std::uint64_t c : gone) {
    bpf_map_delete_elem(g_ctls, &c);
    bpf_map_delete_elem(g_dirs, &c);
  }
  return gone.size();
}

#else  // built without the kernel splice

bool built() {
  return false;
}
bool load(std::string& why) {
  why = "this pgproxy was built without it (./configure --disable-kernel-splice)";
  return false;
}
bool available() {
  return false;
}
std::uint64_t cookie(int) {
  return 0;
}
bool join(int, std::uint64_t, int, std::uint64_t, std::string& why) {
  why = "not built";
  return false;
}
bool arm(std::uint64_t, std::uint64_t, std::uint64_t, std::uint64_t) {
  return false;
}
std::optional<Direction> direction(std::uint64_t) {
  return std::nullopt;
}
std::optional<std::uint64_t> handed(int, bool) {
  return std::nullopt;
}
void leave(std::uint64_t, std::uint64_t) {}
std::size_t sweep() {
  return 0;
}

#endif

}  // namespace pgproxy::net::kernel_splice
