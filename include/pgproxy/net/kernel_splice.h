// The in-kernel splice (splice: kernel): a BPF sockmap whose stream-verdict program moves a
// passthrough session's bytes from one TCP socket to the other without waking pgproxy.
//
// The master loads the program once (load) before it forks; workers inherit the maps and put
// session pairs in (join) and take them out (leave). The program falls back to passing bytes up
// to pgproxy when the peer is slow (see src/bpf/splice.bpf.c); the worker then relays them itself,
// after the kernel's queue for that direction has drained (handed), and later asks the program
// to take over again (arm). Every call is a syscall or two; none blocks.
#pragma once

#include <cstdint>
#include <optional>
#include <string>

namespace pgproxy::net::kernel_splice {

// What the program keeps per receiving socket (mirrors struct dir in splice.bpf.c).
struct Direction {
  std::uint64_t passed = 0;      // bytes passed up to pgproxy
  std::uint64_t redirected = 0;  // bytes redirected since the last switch to redirecting
  std::uint64_t handed0 = 0;     // the peer's bytes taken at that switch
  std::uint64_t total = 0;       // bytes redirected in all
  std::uint64_t seen_gen = 0;
  std::uint32_t mode = 0;  // 1: redirecting
  std::uint32_t fallbacks = 0;
};

// Bytes the kernel may queue in front of a slow peer before passing up (per direction); beyond
// them the sender waits on TCP flow control, as with pgproxy's own relay.
constexpr std::uint64_t kQueueLimit = 1u << 20;

// Loads and attaches the program (the master, once; again after a failure is allowed). False with
// `why` when this build has no kernel splice or the kernel refuses it (no CAP_BPF,
// CAP_NET_ADMIN and CAP_PERFMON, or no sockmap support).
bool load(std::string& why);
bool available();
// Whether this build has the kernel splice at all (./configure --disable-kernel-splice).
bool built();

std::uint64_t cookie(int fd);  // 0 on failure

// Puts a session's two sockets in: from their next byte both ways go through the kernel. Call only
// when pgproxy holds no byte of either direction. False with `why` (nothing is left in).
bool join(int a, std::uint64_t a_cookie, int b, std::uint64_t b_cookie, std::string& why);
// Asks the program to redirect `fd`'s bytes again once pgproxy has read `passed` of them.
bool arm(std::uint64_t cookie, std::uint64_t peer_cookie, std::uint64_t gen, std::uint64_t passed);
std::optional<Direction> direction(std::uint64_t cookie);
// Bytes a socket has taken for sending since it connected (acknowledged plus queued); never more
// than the truth, and exactly it with `exact` (nullopt if ACKs kept racing the reads). With an
// exact baseline taken at the join, pgproxy tells when every byte the kernel redirected to a socket
// has reached it (the program's own estimate, read without the socket's lock, can run ahead of
// the truth and serves only its queue bound).
std::optional<std::uint64_t> handed(int fd, bool exact = false);
// Takes a session's sockets out (their bytes then reach pgproxy again).
void leave(std::uint64_t a_cookie, std::uint64_t b_cookie);
// The master, after a worker died: forgets the state of sockets that are gone (the kernel removes
// closed sockets from the sockmap itself, not from the state maps). Returns how many it forgot.
std::size_t sweep();

}  // namespace pgproxy::net::kernel_splice
