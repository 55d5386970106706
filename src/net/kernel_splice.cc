#include "pgproxy/net/kernel_splice.h"

#include <fcntl.h>
#include <linux/sockios.h>
#include <linux/tcp.h>
#include <netinet/in.h>
#include <sys/ioctl.h>
#include <sys/socket.h>
#include <unistd.h>

#include <cstdio>

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
  std::uint64_t limit = kQueueLimit;
};
static_assert(sizeof(Control) == 24 && sizeof(Direction) == 40);

// Loaded by the master and inherited by every worker; never unloaded (a worker exiting must not
// detach what the others use).
splice_bpf* g_skel = nullptr;
int g_socks = -1, g_peers = -1, g_ctls = -1, g_dirs = -1, g_watched = -1;

int quietLibbpf(libbpf_print_level level, const char*, va_list) {
  (void)level;
  return 0;  // the verifier's log is long; load() reports the error in one line
}

bool setControl(std::uint64_t cookie, const Control& c) {
  return bpf_map_update_elem(g_ctls, &cookie, &c, BPF_ANY) == 0;
}

// Bytes that arrived while the program was not attached wait in the receive queue until the next
// segment wakes it, which may never come (a client waiting for an answer): changing SO_RCVLOWAT
// makes TCP signal data-ready now, so the program takes them, in order.
void kick(int fd) {
  int one = 1;
  setsockopt(fd, SOL_SOCKET, SO_RCVLOWAT, &one, sizeof(one));
}

// The cgroup v2 directory this process belongs to: its sockets are the ones the sockops program
// sees. Empty when there is none (a cgroup v1-only system).
std::string ownCgroup() {
  std::string mount;
  if (FILE* f = std::fopen("/proc/self/mountinfo", "r")) {
    char line[4096];
    while (std::fgets(line, sizeof(line), f)) {
      // "... <mount point> <options> - cgroup2 <source> <options>"
      std::string l(line);
      auto dash = l.find(" - cgroup2 ");
      if (dash == std::string::npos) {
        continue;
      }
      std::size_t field = 0, pos = 0;
      for (; field < 4 && pos != std::string::npos; ++field) {
        pos = l.find(' ', pos + 1);
      }
      if (pos != std::string::npos) {
        mount = l.substr(pos + 1, l.find(' ', pos + 1) - pos - 1);
        break;
      }
    }
    std::fclose(f);
  }
  std::string path;
  if (FILE* f = std::fopen("/proc/self/cgroup", "r")) {
    char line[4096];
    while (std::fgets(line, sizeof(line), f)) {
      if (std::strncmp(line, "0::", 3) == 0) {
        path = line + 3;
        while (!path.empty() && path.back() == '\n') {
          path.pop_back();
        }
      }
    }
    std::fclose(f);
  }
  return mount.empty() || path.empty() ? std::string() : mount + path;
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
  std::string cgroup = ownCgroup();
  int cg = cgroup.empty() ? -1 : ::open(cgroup.c_str(), O_RDONLY | O_DIRECTORY | O_CLOEXEC);
  // A link, not a plain attachment: it goes away with the last process holding it (the master
  // and its workers), so a pgproxy that dies leaves nothing behind in the cgroup.
  bpf_link* link = cg < 0 ? nullptr : bpf_program__attach_cgroup(skel->progs.splice_sockops, cg);
  int attach_errno = errno;
  if (cg >= 0) {
    ::close(cg);
  }
  if (!link) {
    why = cgroup.empty() ? std::string("no cgroup v2 hierarchy to attach the sockops program to")
                         : "the sockops program did not attach to " + cgroup + ": " +
                               base::errnoText(attach_errno);
    splice_bpf__destroy(skel);
    return false;
  }
  skel->links.splice_sockops = link;  // destroyed with the skeleton
  g_skel = skel;
  g_socks = socks;
  g_peers = bpf_map__fd(skel->maps.peers);
  g_ctls = bpf_map__fd(skel->maps.ctls);
  g_dirs = bpf_map__fd(skel->maps.dirs);
  g_watched = bpf_map__fd(skel->maps.watched);
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
  // A socket the kernel could never pause would let its queue in front of a slow peer grow
  // without bound: one connected before the programs loaded (waiting in the listen backlog
  // through the reload that loaded them).
  for (int fd : {a, b}) {
    std::uint32_t w = 0;
    if (bpf_map_lookup_elem(g_watched, &fd, &w) != 0) {
      why = errno == ENOENT ? "a socket connected before the in-kernel splice loaded"
                            : base::errnoText(errno);
      return false;
    }
  }
  // State first, then the redirect targets, then the program's reach: the program finds all it
  // needs from the first segment on (arm 1 differs from a fresh state's 0: it takes its baseline).
  Direction zero;
  Control ca{b_cookie, 1, kQueueLimit}, cb{a_cookie, 1, kQueueLimit};
  std::uint64_t fa = static_cast<std::uint64_t>(a), fb = static_cast<std::uint64_t>(b);
  if (bpf_map_update_elem(g_dirs, &a_cookie, &zero, BPF_ANY) != 0 ||
      bpf_map_update_elem(g_dirs, &b_cookie, &zero, BPF_ANY) != 0 || !setControl(a_cookie, ca) ||
      !setControl(b_cookie, cb) || bpf_map_update_elem(g_peers, &a_cookie, &fa, BPF_ANY) != 0 ||
      bpf_map_update_elem(g_peers, &b_cookie, &fb, BPF_ANY) != 0 ||
      bpf_map_update_elem(g_socks, &a_cookie, &fa, BPF_ANY) != 0 ||
      bpf_map_update_elem(g_socks, &b_cookie, &fb, BPF_ANY) != 0) {
    why = base::errnoText(errno) + " (the maps hold at most " + std::to_string(kMaxSockets) +
          " sockets)";
    leave(a_cookie, b_cookie);
    return false;
  }
  kick(a);
  kick(b);
  return true;
}

bool resume(int fd, std::uint64_t cookie, std::uint64_t peer_cookie, std::uint64_t gen) {
  std::uint64_t f = static_cast<std::uint64_t>(fd);
  if (!g_skel || !setControl(cookie, Control{peer_cookie, gen, kQueueLimit}) ||
      bpf_map_update_elem(g_socks, &cookie, &f, BPF_ANY) != 0) {
    return false;
  }
  kick(fd);
  return true;
}

std::optional<Direction> direction(std::uint64_t cookie) {
  Direction d;
  if (!g_skel || bpf_map_lookup_elem(g_dirs, &cookie, &d) != 0) {
    return std::nullopt;
  }
  return d;
}

namespace {

// A TCP_INFO byte counter plus (`sign` 1) or less (-1) a queue length read by ioctl `queue`: two
// reads, ordered so that traffic between them only makes the result smaller than the truth.
// `exact`: read the counter again after the queue, and retry until nothing moved it between.
std::optional<std::uint64_t> counterAndQueue(int fd, __u64 tcp_info::*counter, unsigned long queue,
                                             int sign, bool exact) {
  for (int attempt = 0; attempt < 8; ++attempt) {
    tcp_info info{}, again{};
    socklen_t len = sizeof(info);
    int queued = 0;
    if (getsockopt(fd, IPPROTO_TCP, TCP_INFO, &info, &len) != 0 || ioctl(fd, queue, &queued) != 0 ||
        queued < 0 || (sign < 0 && static_cast<std::uint64_t>(queued) > info.*counter)) {
      return std::nullopt;
    }
    std::uint64_t sum = sign > 0 ? info.*counter + static_cast<std::uint64_t>(queued)
                                 : info.*counter - static_cast<std::uint64_t>(queued);
    if (!exact) {
      return sum;
    }
    len = sizeof(again);
    if (getsockopt(fd, IPPROTO_TCP, TCP_INFO, &again, &len) != 0) {
      return std::nullopt;
    }
    if (again.*counter == info.*counter) {
      return sum;
    }
  }
  return std::nullopt;  // traffic kept coming: the caller tries later
}

}  // namespace

std::optional<std::uint64_t> handed(int fd, bool exact) {
  // Acknowledged bytes plus those still in the send queue: an ACK between the reads only makes
  // the sum smaller than the truth.
  return counterAndQueue(fd, &tcp_info::tcpi_bytes_acked, SIOCOUTQ, 1, exact);
}

std::optional<std::uint64_t> taken(int fd, bool exact) {
  // Received bytes less those still queued: a segment arriving between the reads only makes the
  // difference smaller than the truth.
  return counterAndQueue(fd, &tcp_info::tcpi_bytes_received, FIONREAD, -1, exact);
}

void leave(std::uint64_t a_cookie, std::uint64_t b_cookie) {
  if (!g_skel) {
    return;
  }
  // Out of the program's reach first: a segment arriving meanwhile stays queued (and is dropped
  // with the socket) instead of being redirected to a peer that is leaving.
  for (std::uint64_t c : {a_cookie, b_cookie}) {
    bpf_map_delete_elem(g_socks, &c);
  }
  for (std::uint64_t c : {a_cookie, b_cookie}) {
    bpf_map_delete_elem(g_peers, &c);
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
    // A closed socket has left the sockmaps (a live one stays in `peers` even while paused): its
    // state is a dead worker's leftover.
    if (bpf_map_lookup_elem(g_peers, &next, &fd) != 0 && errno == ENOENT) {
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
bool resume(int, std::uint64_t, std::uint64_t, std::uint64_t) {
  return false;
}
std::optional<Direction> direction(std::uint64_t) {
  return std::nullopt;
}
std::optional<std::uint64_t> handed(int, bool) {
  return std::nullopt;
}
std::optional<std::uint64_t> taken(int, bool) {
  return std::nullopt;
}
void leave(std::uint64_t, std::uint64_t) {}
std::size_t sweep() {
  return 0;
}

#endif

}  // namespace pgproxy::net::kernel_splice
