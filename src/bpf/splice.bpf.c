// The in-kernel splice (splice: kernel): an sk_skb stream verdict run on every segment a spliced
// socket receives. It hands the bytes straight to the peer socket's send path, unless that
// would queue too much in front of a slow peer: then it stops redirecting and passes the bytes
// up to pgproxy (SK_PASS), whose reading stops when its peer is full, so that the sender's TCP
// window closes. The kernel's redirect has no backpressure of its own: its queue in front of the
// peer grows without bound while the sender's window stays open.
//
// User space (src/net/kernel_splice.cc) writes `ctls`; this program writes `dirs`. Each is keyed
// by the receiving socket's cookie; the sockets themselves are in `socks`, keyed the same way.
#include <linux/bpf.h>
#include <bpf/bpf_helpers.h>

// CO-RE: only the fields read below, relocated against the running kernel's BTF.
struct tcp_sock {
  __u64 bytes_acked;
  __u32 write_seq;
  __u32 snd_una;
} __attribute__((preserve_access_index));

// Mirrors kernel_splice.h's Control and Direction.
struct ctl {
  __u64 peer;        // the cookie of the socket this one's bytes go to
  __u64 arm_gen;     // bumped by pgproxy to ask for redirecting (again)
  __u64 arm_passed;  // ... once it has read this many passed bytes: nothing older is left
  __u64 limit;       // bytes the kernel may queue in front of the peer
};
struct dir {
  __u64 passed;      // bytes passed up to pgproxy
  __u64 redirected;  // bytes redirected since the last switch to redirecting
  __u64 handed0;     // the peer's bytes_acked + unacked at that switch
  __u64 total;       // bytes redirected in all
  __u64 seen_gen;    // the arm_gen that switch answered
  __u32 mode;        // 1: redirecting; 0: passing up
  __u32 fallbacks;   // switches to passing up because the peer was slow
};

struct {
  __uint(type, BPF_MAP_TYPE_SOCKHASH);
  __uint(max_entries, 131072);
  __type(key, __u64);
  __type(value, __u64);  // 8 bytes: user space can then look a socket up (it reads its cookie)
} socks SEC(".maps");

struct {
  __uint(type, BPF_MAP_TYPE_HASH);
  __uint(map_flags, BPF_F_NO_PREALLOC);
  __uint(max_entries, 131072);
  __type(key, __u64);
  __type(value, struct ctl);
} ctls SEC(".maps");

struct {
  __uint(type, BPF_MAP_TYPE_HASH);
  __uint(map_flags, BPF_F_NO_PREALLOC);
  __uint(max_entries, 131072);
  __type(key, __u64);
  __type(value, struct dir);
} dirs SEC(".maps");

static __always_inline int pass_up(struct dir *d, __u32 len) {
  d->mode = 0;
  d->passed += len;
  return SK_PASS;
}

SEC("sk_skb/stream_verdict")
int splice_verdict(struct __sk_buff *skb) {
  __u64 me = bpf_get_socket_cookie(skb);
  struct ctl *c = bpf_map_lookup_elem(&ctls, &me);
  struct dir *d = bpf_map_lookup_elem(&dirs, &me);
  if (!c || !d) {
    return SK_PASS;
  }
  __u32 len = skb->len;
  __u64 key = c->peer;
  struct bpf_sock *peer = bpf_map_lookup_elem(&socks, &key);
  if (!peer) {
    return pass_up(d, len);  // the peer is closing: pgproxy sees the bytes and ends the session
  }
  struct tcp_sock *tp = bpf_skc_to_tcp_sock(peer);
  __u64 handed = 0;
  if (tp) {
    handed = tp->bytes_acked + (__u32)(tp->write_seq - tp->snd_una);
  }
  bpf_sk_release(peer);
  if (!tp) {
    return pass_up(d, len);
  }
  if (d->mode == 0) {
    // Switching to redirecting is safe only when pgproxy has read and forwarded every byte passed
    // up before: otherwise newer bytes would overtake them.
    if (c->arm_gen == d->seen_gen || c->arm_passed != d->passed) {
      d->passed += len;
      return SK_PASS;
    }
    d->seen_gen = c->arm_gen;
    d->mode = 1;
    d->handed0 = handed;
    d->redirected = 0;
  }
  // Bytes redirected that the peer's socket has not taken yet: the kernel's unbounded queue.
  if (d->redirected - (handed - d->handed0) + len > c->limit) {
    d->fallbacks++;
    return pass_up(d, len);
  }
  d->redirected += len;
  d->total += len;
  return bpf_sk_redirect_hash(skb, &socks, &key, 0);
}

char LICENSE[] SEC("license") = "GPL";
