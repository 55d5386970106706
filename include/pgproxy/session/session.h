#pragma once

#include <netinet/in.h>
#include <sys/socket.h>

#include <cstddef>
#include <cstdint>
#include <memory>
#include <optional>
#include <string>
#include <string_view>
#include <vector>

#include "pgproxy/admin/console.h"
#include "pgproxy/auth/client_auth.h"
#include "pgproxy/auth/secret_fetch.h"
#include "pgproxy/cancel/registry.h"
#include "pgproxy/metrics/metrics.h"
#include "pgproxy/net/kernel_splice.h"
#include "pgproxy/plugin/host.h"
#include "pgproxy/plugin/query_gate.h"
#include "pgproxy/proto/sasl_filter.h"
#include "pgproxy/proto/startup.h"
#include "pgproxy/proto/wire.h"
#include "pgproxy/session/context.h"
#include "pgproxy/upstream/dialer.h"

namespace pgproxy::audit {
class Event;
}

struct bufferevent;
struct event;
typedef struct ssl_st SSL;

namespace pgproxy::session {

using metrics::Outcome;

// One client connection, from accept to close: the connection state machine.
//
//   Preamble ──SSLRequest──> ClientHello ──> Connecting ──> UpstreamSsl ──> Splice
//      │  └────first 0x16 (direct TLS)──┘         ▲
//      ├──StartupMessage (plaintext) ─────────────┘ (straight to Splice after connect)
//      ├──GSSENCRequest: answer 'N', stay in Preamble
//      └──CancelRequest ──> Cancelling
//
// A mapping with tls: terminate leaves ClientHello for pgproxy's own TLS handshake:
//   ClientHello ──> TlsAccept ──> TlsStartup (StartupMessage inside TLS) ──> Connecting
//     ──> [UpstreamSsl ──> BackendTls (backend_tls other than disable)] ──> Splice
// A mapping with authenticate: true puts pgproxy's own login in between (authenticate.cc):
//   ... StartupMessage ──> ClientAuth (pgproxy authenticates the client) ──> Connecting ──> ...
//     ──> ServerLogin (pgproxy logs in to the backend for the client) ──> Splice
// A user who is not in the auth file, with auth.query set, waits for its secret first (the cache
// answers at once, else a lookup on a backend; handshake_timeout still runs):
//   StartupMessage ──> SecretLookup ──> ClientAuth ──> ...
// A mapping with a pool authenticates the same way, then never has a backend of its own
// (pooled.cc): ClientAuth ──> Pooled, where it borrows server connections from its pool.
// A StartupMessage for the database "pgproxy" (with admin.users set) goes to the admin console
// (console.cc) instead of a backend: StartupMessage ──> [ClientAuth ──>] Console.
//   any state ──> Closing (flush what we owe the client, then free everything)
struct Pooled;

class Session {
 public:
  // `console_only`: accepted on admin.console, where every connection is the psql console.
  // `proxied`: the listen entry, when its connections start with a PROXY protocol header.
  static void accept(Context& ctx, int fd, const sockaddr* addr, int addrlen,
                     bool console_only = false, const config::ListenAddress* proxied = nullptr);
  // Closes the session through its normal close path (fast shutdown, drain timeout).
  void shutdown();
  // KILL from the console: the client is told (FATAL 57P01, as pg_terminate_backend) where it
  // can read one, then closed.
  void kill();
  // The console's SHOW CLIENTS row for this session (admin::clientColumns' order); `slot` is the
  // worker's, for the ids.
  std::vector<std::optional<std::string>> clientRow(std::size_t slot) const;
  std::uint64_t id() const { return id_; }
  std::size_t mapping() const { return mapping_; }

  Session* next_ = nullptr;  // intrusive list owned by Context
  Session* prev_ = nullptr;

 private:
  enum class State {
    kPreamble,
    kClientHello,
    kConnecting,
    kUpstreamSsl,
    kTlsAccept,
    kTlsStartup,
    kBackendTls,
    kSecretLookup,
    kClientAuth,
    kServerLogin,
    kPooled,
    kConsole,
    kSplice,
    kCancelling,
    kClosing,
  };
  enum class Mode { kUnknown, kPassthrough, kDirectTls, kPlaintext, kCancel };

  Session(Context& ctx, int fd, const sockaddr* addr, int addrlen);
  ~Session();

  static void onClientRead(bufferevent* bev, void* arg);
  static void onClientWrite(bufferevent* bev, void* arg);
  static void onClientEvent(bufferevent* bev, short what, void* arg);
  static void onBackendRead(bufferevent* bev, void* arg);
  static void onBackendEvent(bufferevent* bev, short what, void* arg);
  static void onTimer(int fd, short what, void* arg);

  void setState(State s);
  void handlePreamble();
  void handleClientHello();
  void routeTo(std::size_t mapping);
  bool admit();             // max_connections, per-client limits, connection rates; false: refused
  void endHandshake();      // no longer counted against max_handshakes
  void idleTimeout();       // idle_timeout fired: 57P05 where the client can read it, then close
  void connectBackend();    // picks a backend, then connectToBackend
  void connectToBackend();  // the one backend_index_ names: resolve, then each address in turn
  static void onResolved(void* arg, int gai_error, const evutil_addrinfo* ai);
  void connectNextAddress();
  // Routes by the StartupMessage (routes, target_session_attrs, a database rewrite) and fills in
  // a templated backend; once per session, before authentication. False: refused.
  bool routeStartup();
  // The StartupMessage of a plaintext or terminated session, still where it came in (the
  // client's bufferevent, or startup_ when read inside TLS): its parameters and length.
  proto::StartupParams pendingStartup(std::size_t& consumed);
  // Puts `packet` in its place (a route's database, a plugin's parameters).
  void replaceStartup(std::size_t consumed, const std::string& packet);
  bool pickBackend();  // false: no backend left to try
  bool pickBackendInRole(config::BackendRole role);
  // The balancer's choice among the session's backends in `role` that are up, not drained, not
  // in `exclude` (bit i: backends[i]; the ones tried already), and (standbys) not behind
  // max_replica_lag; no side effects on the session.
  std::optional<std::size_t> chooseBackend(config::BackendRole role, std::uint64_t exclude);
  // read_write_split: the pool the transaction whose first bytes wait in the pooled session's
  // `up` runs on (pooled.cc).
  void choosePool();
  bool drained(std::size_t backend) const;  // DRAIN BACKEND: out of balancing
  void resetBackend();                      // forgets a failed backend connection, to try another
  const config::Backend& backend() const;
  std::size_t backendSlot() const;
  void onBackendConnected();
  void handleUpstreamSsl();
  // The splice (splice.cc): after the handshake the sockets leave their bufferevents and bytes
  // move with plain recv/send through one buffer shared by the worker; memory is held only for
  // bytes a slow peer has not taken yet.
  static void onSocketEvent(int fd, short what, void* arg);
  // `backend_first`: backend bytes the client is owed before anything else (a login pgproxy ran).
  void startSplice(std::string backend_first = {});
  // The backend is connected (and its TLS, if any, is up): the splice, or pgproxy's login first.
  void backendReady();
  void watchSockets();           // raw-socket events, once the bufferevent of a side is gone
  bool relay(bool from_client);  // false: the session was closed
  bool flush(bool to_client);    // false: the session was closed
  // Writes what is queued for one side. kBlocked: the socket is full and its write event is
  // armed; kFailed: `err` says why.
  enum class WriteResult { kDone, kBlocked, kFailed };
  WriteResult writePending(bool to_client, int& err);
  bool onSpliceEof(bool client_side);  // false: the session was closed
  // The backend went away before its first byte: start over with another one, replaying what
  // the client had sent (nothing has happened on the server yet). False: no retry possible.
  bool retryBeforeFirstByte(const char* why);
  Outcome spliceErrorOutcome() const;
  // A socket of the splice failed with `err` (the side whose socket it was): log and close.
  void spliceSocketError(bool client_side, int err);
  // False when the bytes ended the session (a backend that does not speak PostgreSQL).
  // A BackendKeyData is rewritten in place when pgproxy issues its own key (instance_id).
  bool inspect(bool from_client, char* data, std::size_t len);
  // One side's socket, through its TLS session when pgproxy terminates one: >0 bytes, 0 EOF,
  // -1 with `err` (EAGAIN: try again when the socket is ready).
  ssize_t readSide(bool client, char* buf, std::size_t len, int& err);
  ssize_t writeSide(bool client, const char* buf, std::size_t len, int& err);
  bool terminated() const { return client_ssl_ != nullptr; }
  // splice: kernel (kernel_link.cc): a passthrough session's sockets in the BPF sockmap, bytes
  // moving between them in the kernel. Side 0 is the client's socket, 1 the backend's; a
  // direction is named by the socket its bytes come from.
  struct KernelLink {
    bool joined = false;
    unsigned join_tries = 0;  // joining waits for a moment when it is safe (maybeEnterKernel)
    // pgproxy's last read of each socket took all it held: what is left starts a segment.
    bool boundary[2] = {true, true};
    std::uint64_t cookie[2] = {};   // the client's and the backend's socket
    std::uint64_t gen[2] = {1, 1};  // the program's arm of each socket (kernel_splice::resume)
    std::uint64_t counted[2] = {};  // kernel-moved bytes already in bytes_up_ / bytes_down_
    // Per direction: what its destination socket had taken at the join (nothing was in flight)
    // and what pgproxy has written to it since; with the kernel's total, what it must have taken
    // once the kernel's queue is drained.
    std::uint64_t base[2] = {};
    std::uint64_t written[2] = {};
    // Per socket: what its reader had taken at the join, and what pgproxy has read from it since
    // (checkKernelDelivery).
    std::uint64_t taken0[2] = {};
    std::uint64_t read[2] = {};
    bool paused[2] = {};    // out of the program's reach: pgproxy reads this socket
    bool relaying[2] = {};  // ... and the kernel's queue of its bytes has drained
    bool waiting[2] = {};   // its bytes wait in the peer's queue for the kernel's to drain
    bool eof_due[2] = {};   // EOF read; passed on once the kernel's queue has drained
    event* timer = nullptr;
    ~KernelLink();
  };
  // After a relay from the backend left nothing pending: joins the sockmap when the mapping
  // wants it (once per session).
  void maybeEnterKernel();
  bool kernelWanted() const;  // a TLS passthrough session of a mapping whose splice is kernel
  KernelLink& kernelLink();   // allocated on first use
  void armKernelTimer();      // onKernelTimer in kDrainPoll
  // Bytes read from a kernel-spliced socket (a paused direction): true when they may be written
  // now; false when they must wait in the peer's queue until the kernel has delivered what it
  // redirected before them (the caller stops reading that side).
  bool kernelMayWrite(bool from_client, std::size_t n);
  void kernelWait(bool from_client);  // the bytes wait: poll until the kernel's queue drains
  // A paused direction pgproxy relayed is idle again: hand it back to the kernel.
  void kernelRearm(bool from_client);
  // EOF on a kernel-spliced side: false when it must wait for the kernel's queue to drain.
  bool kernelEofReady(bool client_side);
  // A kernel-spliced session's goodbyes pass pgproxy by: whether either socket has received a FIN
  // that pgproxy has not read yet (what client_eof_ and backend_eof_ say in user space).
  bool kernelSawFin() const;
  bool kernelDrained(int side);                     // the kernel's queue of that direction is empty
  void kernelWrote(bool to_client, std::size_t n);  // pgproxy wrote n bytes to that side
  void kernelRead(bool from_client, bool drained);  // where pgproxy's reads of a socket stopped
  static void onKernelTimer(int fd, short what, void* arg);
  // Adds what the kernel moved since the last call to the byte counters; true when it moved any.
  bool syncKernelBytes();
  // At the end: logs an error if the kernel dropped bytes it had acknowledged.
  void checkKernelDelivery();
  bool leaveKernel();  // out of the sockmap, counters synced (close); false: it was not in
  // Terminated sessions: refuses a SCRAM login that cannot succeed (see SaslMechanismFilter);
  // false: the session was closed.
  bool checkClientFirst(std::string_view bytes);
  // TLS termination (terminate.cc).
  void startClientTls();
  void startBackendTls();
  void driveHandshake(bool client_side);
  void readTlsStartup();
  // authenticate: true (authenticate.cc).
  void startClientAuth();
  // auth.type cert: the certificate of a terminated client (none for a plaintext one).
  auth::ClientCertificate clientCertificate() const;
  // The exchange with the client, once the user's secret is known (`looked_up`: auth.query's).
  void beginClientAuth(const auth::UserSecret* secret,
                       std::shared_ptr<const auth::UserSecret> looked_up);
  static void onSecretAnswer(void* arg, auth::SecretAnswer answer);
  void secretLookupFailed(const std::string& why, const char* sqlstate, Outcome outcome);
  void readClientAuth();
  bool onClientAuthStep(auth::ClientAuth::Step step);  // false: the session was closed
  void startServerLogin();
  void readServerLogin();
  void serverLoginFailed(const std::string& why, std::string response);
  // Pooled mappings (pooled.cc): after the client's authentication the session draws server
  // connections from a pool instead of having its own backend.
  friend struct Pooled;
  void startPooled();
  // The admin console (console.cc): the virtual database "pgproxy" when admin.users is set.
  bool wantsConsole(std::string_view packet) const;
  void startConsole(std::string_view packet);
  void enterConsole();
  void readConsole();
  bool consoleInput(std::string_view bytes);                          // false: the session ended
  bool consoleStatus(admin::Console::Status st, std::size_t before);  // likewise
  void consoleAnswered(admin::Gathered g);
  void flushConsole();
  // Plaintext: the client's socket leaves its bufferevent (the StartupMessage and anything after
  // it go to startup_) for pgproxy's own login exchange.
  void takeClientSocket();
  void sendGreeting();
  void readPooledClient();
  // false: the session was closed. `more`: hold the bytes for the next call to send with them.
  bool writeToClient(std::string_view bytes, bool more = false);
  bool flushPooledClient();  // false: the session was closed
  void wakeForBufferedTls();
  void holdClientReads(bool hold);
  void unlinkPooled();  // leaves the pool's queue and gives back the server, if any
  void endPooled();
  // Writes what is queued for a side during the login phases; false: the session was closed.
  bool flushLogin(bool to_client);
  void backendFailed(const std::string& why, int err);
  // Ends the session with `message`: FATAL 08006 where the client can read one (plaintext and
  // terminated sessions), else a TLS alert.
  void failSession(Outcome why, const std::string& message,
                   const char* sqlstate = proto::sqlstate::kConnectionFailure);
  // The StartupMessage checks PostgreSQL makes before authentication; false: refused.
  bool acceptStartup(const proto::Preamble& pre, std::string_view packet);
  static int detach(bufferevent* bev, std::string& unread, std::string& unsent);
  // Forwards cancel_request_ (the client's CancelRequest, any protocol version) to the backend
  // its key names, or fans it out for passthrough sessions.
  void startCancel();
  void nextCancelTarget();
  void logProtocol(bool from_client, const proto::MessageFramer::Message& m);
  // The audit log (audit_events.cc): each writes one event when audit is on.
  void auditFields(audit::Event& e) const;  // the session's identity: id, client, sni, mapping
  void auditConnect();
  void auditStartup(const proto::StartupParams& params);
  void auditAuth(bool ok, std::string_view detail);
  void auditRoute(std::string_view target, std::string_view reason);
  std::string routeReason() const;  // why backend() was chosen, in words
  void auditRefuse(Outcome why, const char* sqlstate, std::string_view message, int tls_alert);
  static void auditDeniedAtAccept(const sockaddr* addr, const char* why);
  void auditDisconnect(Outcome why);
  // Client bytes of a plaintext or terminated session: statements for audit.statements, and
  // every message both ways for log_protocol.
  void tapMessages(bool from_client, std::string_view bytes);
  void auditStatement(char type, std::uint32_t length, std::string_view body);
  // audit.fail: closed: false (after refusing the session) while events cannot be written.
  bool auditAdmits();
  // Plugins (plugin_hooks.cc). on_connect, then routeTo the mapping it leaves.
  void routeWithPlugins(std::size_t mapping);
  // on_startup (plaintext and terminated), before the startup routes; false: refused.
  bool pluginStartup();
  // on_query (pooled): `bytes` through the gate into taps_->gated; false: the session ended.
  bool pluginQueries(std::string_view bytes);
  void pluginDisconnect(Outcome why);
  // The hooks' view of the session; `client` and `client_ip` hold the texts it points to.
  plugin::Info pluginInfo(std::string& client, std::string& client_ip) const;
  // A plugin's refusal: its message and SQLSTATE where the client can read one, else a TLS
  // alert; a plugin that failed is XX000 without its error (that is for the log).
  void pluginRefuse(const plugin::Verdict& v);
  // The mapping a plugin's route names; SIZE_MAX (after refusing) when there is none.
  std::size_t pluginRoute(const plugin::Verdict& v);
  void publishBackendKey();

  // Refusals: an ErrorResponse on a plaintext channel, a TLS alert inside a TLS handshake.
  void refuse(Outcome why, const char* sqlstate, const std::string& message,
              const std::string& hint = {});
  void refuseTls(Outcome why, std::uint8_t alert, const std::string& log_message);
  // Sends `bytes` (an ErrorResponse or an alert) as the session's last words, then closes.
  void sendLastWords(Outcome why, std::string bytes);
  void closeAfterFlush(Outcome why);
  void close(Outcome why);
  void armTimer(std::uint64_t ms);
  std::size_t metricIndex() const;
  void backendAnswered();
  const char* modeName() const;
  std::string peer() const;
  std::string peerHost() const;  // peer() without the port

  Context& ctx_;
  std::uint64_t id_;
  State state_ = State::kPreamble;
  Mode mode_ = Mode::kUnknown;
  Outcome outcome_ = Outcome::kOk;
  bufferevent* client_ = nullptr;
  bufferevent* backend_ = nullptr;
  event* timer_ = nullptr;
  sockaddr_storage client_addr_{};
  std::uint64_t started_us_;
  std::uint64_t connect_started_us_ = 0;
  bool counted_active_ = false;         // in pgproxy_backend_sessions_active
  bool admitted_ = false;               // counted against max_connections
  bool client_counted_ = false;         // counted against max_connections_per_client
  bool handshaking_ = false;            // counted against max_handshakes
  std::uint64_t last_activity_ms_ = 0;  // idle_timeout: the last byte either way
  std::string sni_;
  std::size_t mapping_ = SIZE_MAX;
  std::size_t backend_index_ = 0;  // into the mapping's backends, valid once tried_ != 0
  std::uint64_t tried_ = 0;        // backends this session has tried (a mapping has at most 64)
  // routeStartup's decision: the backends the session may use (bit i: the mapping's backends[i])
  // and in which role.
  std::uint64_t route_backends_ = ~0ull;
  config::BackendRole role_ = config::BackendRole::kAny;
  bool prefer_standby_ = false;
  bool routed_ = false;
  // A wildcard mapping's backend named after the client's server name (internal: "$1...").
  std::unique_ptr<config::Backend> templated_;
  // authenticate: true: pgproxy's exchanges with the client and then the backend (freed once the
  // splice starts, so that idle sessions do not carry them).
  bool authenticated_ = false;
  std::unique_ptr<auth::ClientAuth> client_auth_;
  std::unique_ptr<auth::ServerLogin> server_login_;
  std::unique_ptr<auth::SecretWait> secret_wait_;  // in SecretLookup only
  std::unique_ptr<Pooled> pooled_;
  bool console_wanted_ = false;  // the StartupMessage asked for the console
  bool console_only_ = false;    // accepted on admin.console
  // The connection starts with a PROXY protocol header, not read yet: client_addr_ is the load
  // balancer's until it is.
  bool proxy_header_due_ = false;
  // The address a PROXY header says the client connected to (only for those: an idle pooled
  // client's size is pgproxy's memory per client).
  std::unique_ptr<sockaddr_storage> proxied_to_;
  bool readProxyHeader();           // false: wait for more, or the session is closed
  std::string proxyHeader() const;  // backend_proxy_protocol: the v2 header for this client
  std::unique_ptr<admin::Console> console_;
  bool console_waiting_ = false;  // a console command waits for the workers' answers
  // While connecting: the name lookup under way and the backend's addresses, tried in turn.
  upstream::Lookup* lookup_ = nullptr;
  std::unique_ptr<upstream::AddressList> addresses_;
  std::uint64_t bytes_up_ = 0;    // client → backend
  std::uint64_t bytes_down_ = 0;  // backend → client
  bool client_eof_ = false;
  bool backend_eof_ = false;
  // Splice state: the raw sockets, their events, and bytes each peer has not taken yet.
  int client_fd_ = -1, backend_fd_ = -1;
  event* client_read_ = nullptr;
  event* client_write_ = nullptr;
  event* backend_read_ = nullptr;
  event* backend_write_ = nullptr;
  std::string to_backend_, to_client_;
  bool client_corked_ = false;  // to_client_ holds bytes writeToClient was told more would follow
  std::string replay_;          // the client's first bytes, until the backend answers (see above)
  // Terminated sessions: pgproxy's TLS sessions with the client and (optionally) the backend,
  // the StartupMessage read inside TLS, and the AuthenticationSASL rewrite.
  SSL* client_ssl_ = nullptr;
  SSL* backend_ssl_ = nullptr;
  bool client_tls_on_socket_ = false;  // the buffered ClientHello has been consumed
  std::string startup_;
  proto::SaslMechanismFilter sasl_filter_;
  bool checking_client_sasl_ = false;  // terminated: until the client's first message is seen
  std::string client_first_;           // that message, while it is incomplete
  int cancel_slot_ = -1;
  proto::BackendKeyScanner key_scanner_;
  proto::FrameTracker client_frames_;  // what the client sent last (goodbye or not)
  // idle_timeout on a plaintext or terminated session: whether the backend's stream is between
  // messages, so that a FATAL can be slipped in before closing. Allocated only with idle_timeout,
  // because an idle session's size is pgproxy's memory per session.
  std::unique_ptr<proto::FrameTracker> backend_frames_;
  bool client_reset_ = false;
  // What log_protocol and the audit log keep for a session: allocated only when one of them is
  // on, because an idle session's size is pgproxy's memory per session.
  struct Taps {
    // Message framers: client → backend (log_protocol, audit.statements), and back (log_protocol).
    std::unique_ptr<proto::MessageFramer> up, down;
    std::string user, database;  // from the StartupMessage, for audit events and plugins
    bool connected = false;      // a connect event was written: a disconnect event follows
    // Plugins' on_query (pooled sessions): Query and Parse held until whole, and the bytes that
    // may go on (reused from read to read).
    std::unique_ptr<plugin::QueryGate> gate;
    std::string gated;
  };
  std::unique_ptr<Taps> taps_;
  Taps& taps();
  bool scanning_key_ = false;
  std::unique_ptr<KernelLink> kernel_;  // splice: kernel; allocated when the session may join
  // Cancel forwarding: the request, byte for byte as the client sent it (16 bytes with a protocol
  // 3.0 key, up to 12 + 256 with a 3.2 one), and the backends still to receive it.
  std::string cancel_request_;
  // Allocated by a cancel only: every idle session would otherwise carry it.
  std::unique_ptr<cancel::BackendAddr[]> cancel_targets_;
  std::size_t cancel_count_ = 0, cancel_next_ = 0;
  bool cancel_proxy_[config::kMaxPeers + 1] =
      {};  // backend_proxy_protocol: a PROXY header before that cancel
  // Adds the peers (`id`: that one; 0: all) to the cancel's targets, unless a peer sent it;
  // returns the new count.
  std::size_t cancelPeers(unsigned id);
};

}  // namespace pgproxy::session
