#pragma once

#include <cstdint>
#include <memory>
#include <string>
#include <string_view>

#include "pgproxy/auth/server_login.h"
#include "pgproxy/cancel/registry.h"
#include "pgproxy/pool/params.h"
#include "pgproxy/pool/prepared.h"
#include "pgproxy/pool/shared_pools.h"
#include "pgproxy/proto/wire.h"
#include "pgproxy/upstream/connector.h"

struct event;
typedef struct ssl_st SSL;

namespace pgproxy::pool {

class Pool;
class PoolClient;

// One pooled server connection: connect (and TLS), log in as the pool's user, then idle in the
// pool or linked to one client at a time. Between clients it runs pgproxy's own queries (the
// client's parameters, the reset query, the check query) and swallows their replies. Bytes move
// in bulk; the server's stream is framed only to see ParameterStatus and ReadyForQuery.
class ServerConn {
 public:
  // Its last ReadyForQuery said idle and nothing after it has come part-way: a message written
  // to its client now falls between transactions.
  bool betweenTransactions() const { return last_status_ == 'I' && framer_.atBoundary(); }
  enum class State { kConnecting, kLogin, kInternal, kIdle, kLinked, kClosed };

  ServerConn(Pool& pool, std::uint64_t id);
  ~ServerConn();
  ServerConn(const ServerConn&) = delete;
  ServerConn& operator=(const ServerConn&) = delete;

  void start();
  // Links to `client`, first running `sync` (a query that gives the server the client's state;
  // empty: none); client->linked() follows, possibly before this returns.
  void attach(PoolClient* client, const std::string& sync);
  // Linked: queues bytes for the server; false when the queue is over its bound (the client
  // stops reading until serverDrained()).
  bool send(std::string_view bytes);
  void resumeReading();
  // Idle in the pool: whether it still is once what the server sent meanwhile is read (a server
  // that spoke or hung up while idle is closed by then).
  bool stillIdle();
  // The client went away: back to the pool when the server is between transactions with nothing
  // in flight, else closed.
  // `holding`: why the server cannot serve another client after this one ("": it can).
  void detach(bool client_quiet, const char* holding = "");
  // Runs `query` and swallows its replies, then goes idle (kIdle) in the pool: the reset and
  // check queries.
  void runInternal(const std::string& query, bool then_idle_for_check);
  // Closes the connection; the pool frees the object later (never inside a callback).
  void close(const std::string& why);

  State state() const { return state_; }
  std::uint64_t id() const { return id_; }
  const PoolClient* client() const { return client_; }
  const Params& params() const { return params_; }
  ServerStatements& statements() { return statements_; }
  const Params& extras() const { return extras_; }
  std::uint64_t stateDigest() const { return digest_; }
  const cancel::BackendAddr& address() const { return addr_; }
  std::uint32_t backendPid() const { return backend_pid_; }
  std::uint32_t backendKey() const { return backend_key_; }
  std::uint64_t createdMs() const { return created_ms_; }
  std::uint64_t idleSinceMs() const { return idle_since_ms_; }
  ServerState sharedState() const { return shared_state_; }
  void setSharedState(ServerState s);
  void markIdle();
  // The client's state was set on this server by pgproxy's sync query (which reports back only
  // some parameters): remember all of it, so the next link compares against it.
  void adoptState(const Params& base, const Params& reported,
                  const Params& extras);  // idle from now: the clock of server_idle_timeout and
                                          // server_check_delay
  // The client's SET / RESET changed what this server has beyond its reported parameters.
  void setExtras(Params extras);

  // The pool's lists.
  ServerConn* all_next = nullptr;
  ServerConn* all_prev = nullptr;
  ServerConn* idle_next = nullptr;
  ServerConn* idle_prev = nullptr;
  bool in_idle = false;
  bool for_check = false;            // the internal query running is the check before a grant
  PoolClient* granted_to = nullptr;  // the client a check runs for
  // Opened for one client beyond the pool's size (the LISTEN hub's): given to it alone once up.
  bool dedicated = false;
  PoolClient* dedicated_to = nullptr;
  bool close_needed = false;  // RECONNECT: closed when its client releases it

 private:
  static void onConnected(void* arg, upstream::Connector::Result r);
  static void onSocket(int fd, short what, void* arg);
  void readable();
  void writable();
  void onLogin(std::string_view bytes);
  void onInternal(std::string_view bytes);
  void onLinked(std::string_view bytes);
  void onIdle(std::string_view bytes);
  bool flushOut();  // false: the connection failed (and is closed)
  void recordParam(std::string_view body);
  void internalDone();
  // close(), with the error for clients waiting on a server that never logged in, and whether
  // the server itself refused the login.
  void fail(const std::string& why, std::string waiter_error, bool refused);

  Pool& pool_;
  std::uint64_t id_;
  State state_ = State::kConnecting;
  ServerState shared_state_ = ServerState::kLogin;
  std::unique_ptr<upstream::Connector> connector_;
  std::unique_ptr<auth::ServerLogin> login_;
  int fd_ = -1;
  SSL* ssl_ = nullptr;
  event* read_ev_ = nullptr;
  event* write_ev_ = nullptr;
  bool reading_paused_ = false;
  int busy_ = 0;  // inside a client callback
  std::string out_;
  proto::MessageFramer framer_{proto::MessageFramer::Framing::kPgMessages, std::string_view("SZE"),
                               0};
  Params params_, extras_;
  ServerStatements statements_;
  std::uint64_t digest_ = 0;  // pool::stateDigest of params_ and extras_
  cancel::BackendAddr addr_{};
  std::uint32_t backend_pid_ = 0, backend_key_ = 0;
  PoolClient* client_ = nullptr;
  char last_status_ = 'I';
  std::string internal_error_;  // the first ErrorResponse of an internal query
  bool internal_then_idle_ = false;
  std::uint64_t created_ms_ = 0;
  std::uint64_t idle_since_ms_ = 0;
};

}  // namespace pgproxy::pool
