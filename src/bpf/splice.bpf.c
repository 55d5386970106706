// The in-kernel splice (splice: kernel): an sk_skb stream verdict run on every segment a spliced
// socket receives. It hands the bytes straight to the peer socket's send path.
//
// The kernel's redirect has no backpressure of its own: its queue in front of a slow peer grows
// without bound while the sender's window stays open. So once more than `limit` bytes wait in
// front of the peer, the verdict asks for a pause, and the sockops program below takes the
// socket out of `socks` the next time the socket sends a segment (an ACK of the bytes it keeps
// receiving): its next bytes then stay in its TCP receive queue for pgproxy's bounded relay,
// whose backpressure closes the sender's window. Two things make that safe, and nothing else
// would: the verdict never passes bytes up itself (a socket's bytes are read either by the
// kernel or by pgproxy, never both), and the socket leaves `socks` only while its lock is held
// and its receive queue is empty. Taking a socket out while a segment is being received (from
// user space, which cannot hold the lock) lets the kernel run the verdict hook with no program
// attached, which drops the segment after TCP has acknowledged it.
//
// Every socket of a spliced session is in `peers` (no program: redirect targets) for the whole
// session, and in `socks` (the verdict attached) while the kernel moves its bytes. User space
// (src/net/kernel_splice.cc) writes `ctls`; the programs write `dirs`. All are keyed by the
// receiving socket's cookie.
#include <linux/bpf.h>
#include <bpf/bpf_helpers.h>

// CO-RE: only the fields read below, relocated against the running kernel's BTF.
struct sk_buff_head {
  __u32 qlen;
} __attribute__((preserve_access_index));
struct sock {
  struct sk_buff_head sk_receive_queue;
} __attribute__((preserve_access_index));
struct inet_sock {
  struct sock sk;
} __attribute__((preserve_access_index));
struct inet_connection_sock {
  struct inet_sock icsk_inet;
} __attribute__((preserve_access_index));
struct tcp_sock {
  struct inet_connection_sock inet_conn;
  __u64 bytes_acked;
  __u32 write_seq;
  __u32 snd_una;
} __attribute__((preserve_access_index));

// Mirrors kernel_splice.cc's Control and kernel_splice.h's Direction.
struct ctl {
  __u64 peer;     // the cookie of the socket this one's bytes go to
  __u64 arm_gen;  // bumped by pgproxy each time it puts the socket (back) in `socks`
  __u64 limit;    // bytes the kernel may queue in front of the peer
};
struct dir {
  __u64 redirected;  // bytes redirected since the last arm
  __u64 handed0;     // the peer's bytes_acked + unacked at that arm
  __u64 total;       // bytes redirected in all
  __u64 seen_gen;    // the arm_gen of that arm
  __u32 asked;       // the verdict asked for a pause since that arm
  __u32 paused;      // the sockops program took the socket out since that arm
};

#define SOCK_ENTRIES 131072

struct {
  __uint(type, BPF_MAP_TYPE_SOCKHASH);
  __uint(max_entries, SOCK_ENTRIES);
  __type(key, __u64);
  __type(value, __u64);  // 8 bytes: user space can then look a socket up (it reads its cookie)
} socks SEC(".maps");

struct {
  __uint(type, BPF_MAP_TYPE_SOCKHASH);
  __uint(max_entries, SOCK_ENTRIES);
  __type(key, __u64);
  __type(value, __u64);
} peers SEC(".maps");

struct {
  __uint(type, BPF_MAP_TYPE_HASH);
  __uint(map_flags, BPF_F_NO_PREALLOC);
  __uint(max_entries, SOCK_ENTRIES);
  __type(key, __u64);
  __type(value, struct ctl);
} ctls SEC(".maps");

struct {
  __uint(type, BPF_MAP_TYPE_HASH);
  __uint(map_flags, BPF_F_NO_PREALLOC);
  __uint(max_entries, SOCK_ENTRIES);
  __type(key, __u64);
  __type(value, struct dir);
} dirs SEC(".maps");

// The sockets the sockops program asked the header-option callback for: only those can be paused,
// so only those may join (one connected or accepted before the program loaded never will be).
struct {
  __uint(type, BPF_MAP_TYPE_SK_STORAGE);
  __uint(map_flags, BPF_F_NO_PREALLOC);
  __type(key, int);
  __type(value, __u32);
} watched SEC(".maps");

SEC("sk_skb/stream_verdict")
int splice_verdict(struct __sk_buff *skb) {
  __u64 me = bpf_get_socket_cookie(skb);
  struct ctl *c = bpf_map_lookup_elem(&ctls, &me);
  struct dir *d = bpf_map_lookup_elem(&dirs, &me);
  if (!c || !d) {
    return SK_DROP;  // the session is being taken apart: pgproxy closes both sockets
  }
  __u32 len = skb->len;
  __u64 key = c->peer;
  struct bpf_sock *peer = bpf_map_lookup_elem(&peers, &key);
  if (!peer) {
    return SK_DROP;  // likewise: the peer socket is closed
  }
  struct tcp_sock *tp = bpf_skc_to_tcp_sock(peer);
  __u64 handed = 0;
  if (tp) {
    handed = tp->bytes_acked + (__u32)(tp->write_seq - tp->snd_una);
  }
  bpf_sk_release(peer);
  if (d->seen_gen != c->arm_gen) {
    d->seen_gen = c->arm_gen;
    d->handed0 = handed;
    d->redirected = 0;
    d->asked = 0;
    d->paused = 0;
  }
  // Bytes redirected that the peer's socket has not taken yet: the kernel's unbounded queue.
  if (d->redirected - (handed - d->handed0) + len > c->limit) {
    d->asked = 1;
  }
  d->redirected += len;
  d->total += len;
  return bpf_sk_redirect_hash(skb, &peers, &key, 0);
}

// Runs for the sockets of pgproxy's cgroup: when they connect or are accepted (to ask for the
// header-option callback, which runs under the socket's lock each time it sends a segment), and
// in that callback.
SEC("sockops")
int splice_sockops(struct bpf_sock_ops *skops) {
  switch (skops->op) {
    case BPF_SOCK_OPS_TCP_CONNECT_CB:
    case BPF_SOCK_OPS_PASSIVE_ESTABLISHED_CB: {
      struct bpf_sock *sk = skops->sk;
      if (sk && bpf_sock_ops_cb_flags_set(skops, skops->bpf_sock_ops_cb_flags |
                                                     BPF_SOCK_OPS_WRITE_HDR_OPT_CB_FLAG) == 0) {
        __u32 *w = bpf_sk_storage_get(&watched, sk, 0, BPF_SK_STORAGE_GET_F_CREATE);
        if (w) {
          *w = 1;
        }
      }
      return 1;
    }
    case BPF_SOCK_OPS_HDR_OPT_LEN_CB:
      break;
    default:
      return 1;
  }
  __u64 me = bpf_get_socket_cookie(skops);
  struct dir *d = bpf_map_lookup_elem(&dirs, &me);
  if (!d || !d->asked || d->paused) {
    return 1;
  }
  struct bpf_sock *sk = skops->sk;
  if (!sk) {
    return 1;
  }
  struct tcp_sock *tp = bpf_skc_to_tcp_sock(sk);
  // A segment sent from inside the verdict's loop over the receive queue (a window update) must
  // wait: the segments still queued would meet the hook without a program.
  if (!tp || tp->inet_conn.icsk_inet.sk.sk_receive_queue.qlen != 0) {
    return 1;
  }
  bpf_map_delete_elem(&socks, &me);
  d->paused = 1;
  return 1;
}

char LICENSE[] SEC("license") = "GPL";
