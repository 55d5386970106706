// The in-kernel splice (splice: kernel): a BPF sockmap whose stream-verdict program moves a
// passthrough session's bytes from one TCP socket to the other without waking pgproxy.
//
// The master loads the programs once (load) before it forks; workers inherit the maps and put
// session pairs in (join) and take them out (leave). When a peer is slow, the kernel pauses the
// direction feeding it by itself (see src/bpf/splice.bpf.c): that socket's bytes then reach
// pgproxy, which relays them after the kernel's queue for that direction has drained (handed),
// then gives the socket back (resume). Every call is a syscall or two; none blocks.
#pragma once

#include <cstddef>
#include <cstdint>
#include <optional>
#include <string>

namespace pgproxy::net::kernel_splice {

// What the program keeps per receiving socket (mirrors struct dir in splice.bpf.c).
struct Direction {
  std::uint64_t redirected = 0;  // bytes redirected since the last arm
  std::uint64_t handed0 = 0;     // the peer's bytes taken at that arm
  std::uint64_t total = 0;       // bytes redirected in all
  std::uint64_t seen_gen = 0;
  std::uint32_t asked = 0;   // the verdict asked for a pause since that arm
  std::uint32_t paused = 0;  // the socket left the program's reach since that arm
};

// Bytes the kernel may queue in front of a slow peer before it pauses the direction (a segment or
// two more may follow before the pause takes effect); beyond them the sender waits on TCP flow
// control, as with pgproxy's own relay.
constexpr std::uint64_t kQueueLimit = 1u << 20;
// The maps' size (SOCK_ENTRIES in splice.bpf.c): two per spliced session.
constexpr std::size_t kMaxSockets = 131072;

// Loads and attaches the programs (the master, once; again after a failure is allowed): the
// verdict to the sockmap, the sockops program to this process's cgroup (v2). False with `why`
// when this build has no kernel splice or the kernel refuses it (no CAP_BPF, CAP_NET_ADMIN and
// CAP_PERFMON, no sockmap support, no cgroup v2).
bool load(std::string& why);
bool available();
// Whether this build has the kernel splice at all (./configure --disable-kernel-splice).
bool built();

std::uint64_t cookie(int fd);  // 0 on failure

// Puts a session's two sockets in: from their next byte both ways go through the kernel. Call only
// when pgproxy holds no byte of either direction and its last read of each emptied it. False
// with `why` (nothing is left in).
bool join(int a, std::uint64_t a_cookie, int b, std::uint64_t b_cookie, std::string& why);
// Gives a paused socket back to the program, arm `gen` (higher than the last): call only when
// pgproxy holds none of its bytes and its last read emptied it.
bool resume(int fd, std::uint64_t cookie, std::uint64_t peer_cookie, std::uint64_t gen);
std::optional<Direction> direction(std::uint64_t cookie);
// Bytes a socket has taken for sending since it connected (acknowledged plus queued); never more
// than the truth, and exactly it with `exact` (nullopt if ACKs kept racing the reads). With an
// exact baseline taken at the join, pgproxy tells when every byte the kernel redirected to a socket
// has reached it (the program's own estimate, read without the socket's lock, can run ahead of
// the truth and serves only its queue bound).
std::optional<std::uint64_t> handed(int fd, bool exact = false);
// Bytes a socket's reader (the program or pgproxy) has taken from it since it connected: received
// less still queued. Never more than the truth; exactly it with `exact` (nullopt if segments kept
// arriving between the reads).
std::optional<std::uint64_t> taken(int fd, bool exact = false);
// Takes a session's sockets out (their bytes then reach pgproxy again).
void leave(std::uint64_t a_cookie, std::uint64_t b_cookie);
// The master, after a worker died: forgets the state of sockets that are gone (the kernel removes
// closed sockets from the sockmap itself, not from the state maps). Returns how many it forgot.
std::size_t sweep();

}  // namespace pgproxy::net::kernel_splice
