#pragma once

#include <cstdint>
#include <memory>
#include <string>
#include <string_view>

#include "pgproxy/pool/link.h"
#include "pgproxy/pool/notify_hub.h"
#include "pgproxy/pool/params.h"
#include "pgproxy/pool/pool.h"
#include "pgproxy/pool/prepared.h"
#include "pgproxy/pool/session_state.h"
#include "pgproxy/sql/read_only.h"

namespace pgproxy::session {

class Session;

// What a session of a pooled mapping holds once pgproxy has authenticated its client: the pool
// it draws servers from, the server it is linked to (if any), the client's message flow and its
// session state (parameters), and the client bytes that wait for a server. Allocated only for
// pooled sessions; the session's own buffers and sockets serve the client side.
struct Pooled final : pool::PoolClient, pool::NotifyHub::Subscriber {
  explicit Pooled(Session& s) : session(s) {}

  void granted(pool::ServerConn* server) override;
  void refused(std::string error) override;
  void linked(std::string error) override;
  bool fromServer(std::string_view bytes, bool more) override;
  void serverParam(std::string_view name, std::string_view value) override;
  pool::Release ready(char status) override;
  void serverLost(const std::string& why) override;
  void serverDrained() override;
  bool welcomed() override;
  // NotifyHub::Subscriber.
  void notify(std::string_view message) override;
  void listening() override;
  void unheard(std::string fatal) override;

  // Client bytes for the linked server, through the prepared statement tracker when there is
  // one; false when the server's queue is over its bound. The session may have ended when it
  // returns (a tracker's refusal): the caller checks.
  bool toServer(std::string_view bytes);

  Session& session;
  pool::Pool* pool = nullptr;
  pool::ServerConn* server = nullptr;
  pool::ClientFlow flow;
  pool::Params params;       // reported parameters, as the client was last told them
  pool::Params extras;       // startup parameters the server does not report
  std::uint64_t digest = 0;  // pool::stateDigest of the state above, over the pool's welcome
  void updateDigest();
  std::string up;        // client bytes waiting for a server (bounded: the client stops being read)
  bool greeted = false;  // the client has had AuthenticationOk and its greeting
  bool reading_held = false;  // client reads stopped: a slow server or a full `up`
  bool linking = false;       // granted a server that is being given the client's state
  bool relinked = false;      // this link's first server was lost before it was up
  std::uint32_t key_pid = 0, key_secret = 0;  // the BackendKeyData pgproxy gave the client
  // Transaction and statement modes with pool.prepared_statements: the client's named
  // statements, mapped onto each server it gets.
  std::unique_ptr<pool::PreparedTracker> prepared;
  // Transaction and statement modes: the SET / RESET of unreported parameters (kept in `extras`,
  // replayed on each server), and what pins the client to its server.
  std::unique_ptr<pool::SessionState> state;
  bool pinned_counted = false;  // in pgproxy_pool_pinned_clients
  // read_write_split: the advisory lock probe is out; the client's next bytes wait in `up` for
  // its answer, so that a client it no longer pins is routed again (after_probe: due now).
  bool probing = false;
  bool after_probe = false;
  // LISTEN through the pool's hub: the client's replies wait until the hub listens (so that a
  // NOTIFY the client sends next reaches it); notifications wait for the end of the client's
  // transaction.
  // Made at the client's first LISTEN: an idle client that never listens pays one pointer.
  struct Listen {
    bool subscribed = false;
    int waits = 0;          // LISTENs not yet in force at the hub
    bool in_ready = false;  // inside ready(): a failure is sent as it ends
    bool flush = false;     // notifications go out after the ReadyForQuery being written
    std::string unheard_fatal;
    std::string held_replies;
    std::string notifications;
  };
  std::unique_ptr<Listen> listen;
  bool listenWaiting() const { return listen && listen->waits > 0; }
  void hubChanges();
  // A split client listens on its home pool's hub, wherever its transaction ran.
  pool::NotifyHub& hub() { return (split ? split->home : pool)->notifyHub(); }
  void flushNotifications();
  const char* pinned() const { return state ? state->pinned() : ""; }
  void countPinned();
  std::string scratch_server, scratch_client;  // the tracker's output, reused

  // read_write_split: `pool` is the pool of the transaction under way; `home` the primary's,
  // where the client was greeted and where everything that is not a proven read runs.
  struct Split {
    pool::Pool* home = nullptr;
    sql::RouteSetting setting = sql::RouteSetting::kAuto;  // SET pgproxy.route
    bool writes = false;              // the transaction under way was not a proven read
    std::uint64_t last_write_ms = 0;  // when the client's last such transaction ended
    // The size of `pool`'s welcome when the digest was last made: a pool learns its welcome
    // from its first server, after a client may have come to it.
    std::size_t welcome_seen = 0;
    // read_write_split: optimistic: an explicit transaction tried on a standby. Until a result
    // set reaches the client its bytes are kept and each batch's replies held to its
    // ReadyForQuery, so that when the standby refuses a write (25006) pgproxy rolls the standby
    // back and runs the transaction again on the primary, and the client sees only the
    // primary's answer to the batch that failed.
    enum class Try : std::uint8_t {
      kNone,         // no transaction is being tried
      kOpen,         // on the standby; a refusal can still be retried
      kClosed,       // on the standby; a result has reached the client (or more than kMaxKept)
      kRollingBack,  // the standby refused: pgproxy's ROLLBACK is under way
      kReplaying,    // on the primary: the replies the client already has are dropped
    };
    Try tried = Try::kNone;
    std::string kept;              // the transaction's client bytes (kOpen)
    std::size_t kept_scanned = 0;  // of them, whole messages looked at
    std::string held;              // replies of the batch under way (kOpen)
    std::size_t held_scanned = 0;  // of them, whole messages looked at
    bool refused = false;          // the batch under way had a 25006
    std::uint32_t delivered = 0;   // batches whose replies the client has (kOpen)
    std::uint32_t replayed = 0;    // of them, answered again on the primary (kReplaying)
    std::uint32_t dropped = 0;     // of them, whose replies were dropped (kReplaying)
    bool switch_due = false;       // the standby rolled back: the primary takes over
    static constexpr std::size_t kMaxKept = std::size_t{64} << 10;
  };
  std::unique_ptr<Split> split;
  // Moves the client to `to` between transactions: its counts, and its parameters rebased on
  // `to`'s welcome.
  void switchPool(pool::Pool* to);
  // read_write_split: optimistic (Split::tried): the client bytes of a transaction being tried,
  // the server's replies on their way to the client (false: the session is gone or the client
  // is behind), the ReadyForQuery of a batch (true when handled here, `r` what to do with the
  // server), and the switch to the primary once the standby has rolled back.
  bool keepTried(std::string_view bytes);
  bool triedReplies(std::string_view replies, bool more);
  bool triedReady(char status, bool own, pool::Release& r);
  void retryOnPrimary();
  bool closeTry();  // a retry is no longer possible: what was held goes to the client
  void endTry();
  // The session state's view of the ReadyForQuery that ended a unit of the client's.
  void stateReady(char status);
};

}  // namespace pgproxy::session
