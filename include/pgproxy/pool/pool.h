#pragma once

#include <cstddef>
#include <cstdint>
#include <map>
#include <memory>
#include <string>
#include <string_view>
#include <tuple>
#include <vector>

#include "pgproxy/auth/server_login.h"
#include "pgproxy/pool/link.h"
#include "pgproxy/pool/params.h"
#include "pgproxy/pool/prepared.h"
#include "pgproxy/pool/shared_pools.h"

struct event;

namespace pgproxy::session {
struct Context;
}

namespace pgproxy::pool {

class ServerConn;
class Pool;
class NotifyHub;

// A pooled client as its pool and its server see it (the session implements it).
class PoolClient {
 public:
  // Waiting: the pool gives it a logged-in server whose state is not yet the client's.
  virtual void granted(ServerConn* server) = 0;
  // Waiting: no server can be had; `error` is the ErrorResponse the client gets before it is
  // closed.
  virtual void refused(std::string error) = 0;
  // After ServerConn::attach: the server's state is now the client's; or the sync failed with
  // `error` (an ErrorResponse, the server still clean) for the client.
  virtual void linked(std::string error) = 0;
  // Linked: bytes for the client; false: the server stops reading until resumeReading().
  // `more`: the server's ReadyForQuery follows in the same read, so the client may hold these
  // and send both in one write (one syscall and one TLS record fewer per transaction).
  virtual bool fromServer(std::string_view bytes, bool more) = 0;
  // Linked: a ParameterStatus (its bytes are also in fromServer).
  virtual void serverParam(std::string_view name, std::string_view value) = 0;
  // Linked: a ReadyForQuery with this status ended the bytes just given; whether the link ends
  // (kRelease: the server has gone back to its pool when this returns).
  virtual Release ready(char status) = 0;
  // Linked: the server connection broke (it is gone when this is called).
  virtual void serverLost(const std::string& why) = 0;
  // Linked: everything queued to the server went out.
  virtual void serverDrained() = 0;
  // Waiting: the pool has just learnt its servers' parameters. True when the client waited only
  // for them (its greeting) and no longer waits; it has then left the FIFO.
  virtual bool welcomed() = 0;

  // The session's id in its worker (SHOW SERVERS' client column).
  std::uint64_t session_id = 0;
  // The pool's FIFO of waiting clients.
  PoolClient* wait_next = nullptr;
  PoolClient* wait_prev = nullptr;
  std::uint64_t wait_since_us = 0;
  bool waiting = false;

 protected:
  ~PoolClient() = default;
};

// The pools of one worker, one per (mapping, backend, user, database), and the timer that keeps
// them: waiting clients time out, idle servers age out, and idle servers are given up when
// clients of another worker wait for the same cap.
class PoolSet {
 public:
  explicit PoolSet(session::Context& ctx);
  ~PoolSet();
  PoolSet(const PoolSet&) = delete;
  PoolSet& operator=(const PoolSet&) = delete;

  // The pool for this key; nullptr with `error` set when the shared table is full.
  Pool* get(std::size_t mapping, std::size_t backend, const std::string& user,
            const std::string& database, std::string& error);
  // The worker drains (an older generation): servers are closed as they become idle.
  void drain();
  bool draining() const { return draining_; }
  session::Context& ctx() { return ctx_; }
  const session::Context& ctx() const { return ctx_; }
  std::uint64_t nextServerId() { return ++server_ids_; }
  // The worker's prepared statement texts, shared by its clients and servers.
  StatementRegistry& statements() { return statements_; }
  // Frees a closed server connection once the loop is back (never under its own callbacks).
  void bury(ServerConn* s);
  // RECONNECT: the mapping's server connections close, idle ones now, the others when their
  // clients release them. Returns how many were open.
  std::size_t reconnect(std::size_t mapping);
  template <typename F>
  void forEachServer(F f) const;  // f(const Pool&, const ServerConn&), after Pool below

 private:
  static void onTick(int fd, short what, void* arg);
  static void onReap(int fd, short what, void* arg);
  void tick();

  session::Context& ctx_;
  StatementRegistry statements_;  // before the pools: their servers hold references into it
  std::map<std::tuple<std::size_t, std::size_t, std::string, std::string>, std::unique_ptr<Pool>>
      pools_;
  event* timer_ = nullptr;
  event* reaper_ = nullptr;
  std::vector<std::unique_ptr<ServerConn>> dead_;
  bool draining_ = false;
  std::uint64_t server_ids_ = 0;
  std::uint64_t last_maintenance_ms_ = 0;
};

class Pool {
 public:
  Pool(PoolSet& set, std::size_t mapping, std::size_t backend, std::string user,
       std::string database, std::size_t shared, std::size_t shared_db);
  ~Pool();
  Pool(const Pool&) = delete;
  Pool& operator=(const Pool&) = delete;

  // How to log in to a server for this pool's user: what the last authenticated client yielded.
  void setCredentials(const auth::ServerCredentials& c) { credentials_ = c; }
  // The parameters the pool's first server reported, for the greeting of clients that come
  // without a server (empty until then).
  const Params& welcome() const { return welcome_; }
  void setWelcome(const Params& p) { welcome_ = p; }

  // A server for `c`: granted() now or later, or refused().
  void acquire(PoolClient* c);
  void cancelWait(PoolClient* c);
  // A server connection of its own for `c`, beyond the pool's size (the caps of the database
  // still hold): granted() once it is up, or refused() (possibly before this returns). False
  // when it cannot be opened now.
  bool startDedicated(PoolClient* c);
  // `c` goes away: a connection started for it is closed once up instead.
  void cancelDedicated(PoolClient* c);
  // A link ended with the server clean (last ReadyForQuery idle, nothing in flight): reset it
  // (session mode) and keep it, or give it to the next waiting client.
  void release(ServerConn* s);

  // From ServerConn.
  void serverUp(ServerConn* s);
  void serverIdle(ServerConn* s);  // after the reset or check query
  void serverLoginFailed(ServerConn* s, std::string error, bool refused_by_server);
  void serverGone(ServerConn* s);  // closed: leaves the counts and the lists; freed by caller

  void tick(std::uint64_t now_ms, bool maintenance);
  // This worker holds more of the pool's servers than its clients' share of the size (`idle`
  // of them idle here).
  bool aboveShare(unsigned idle) const;
  bool unused() const { return servers_ == nullptr && waiters_ == nullptr && clients_ == 0; }
  void addClient(int delta) {
    clients_ = static_cast<unsigned>(static_cast<int>(clients_) + delta);
  }
  void closeAll();
  std::size_t reconnect();  // see PoolSet::reconnect
  template <typename F>
  void forEachServer(F f) const {
    for (const ServerConn* s = servers_; s; s = nextServer(s)) {
      f(*this, *s);
    }
  }
  static const ServerConn* nextServer(const ServerConn* s);

  PoolSet& set() { return set_; }
  const PoolSet& set() const { return set_; }
  const config::PoolConfig& config() const;
  std::size_t mapping() const { return mapping_; }
  std::size_t backend() const { return backend_; }
  const std::string& user() const { return user_; }
  const std::string& database() const { return database_; }
  std::size_t sharedEntry() const { return shared_; }
  const auth::ServerCredentials& credentials() const { return credentials_; }
  std::string describe() const;  // user@database on backend, for logs
  // The connection that listens for this pool's clients (made at the first LISTEN).
  NotifyHub& notifyHub();

 private:
  bool startServer(unsigned cap);  // a new connection if the caps allow
  bool paused() const;             // PAUSE from the console (admin/control.h)
  void grantWaiters();             // idle servers to waiting clients, oldest first
  void grant(ServerConn* s, PoolClient* c);
  void giveOrKeep(ServerConn* s);
  void pushWaiter(PoolClient* c);
  void popWaiter(PoolClient* c);
  void refuseAll(const std::string& error);
  ServerConn* takeIdle();

  PoolSet& set_;
  std::size_t mapping_, backend_;
  std::string user_, database_;
  std::size_t shared_, shared_db_;
  auth::ServerCredentials credentials_;
  Params welcome_;
  ServerConn* servers_ = nullptr;  // every server of this pool in this worker
  ServerConn* idle_ = nullptr;     // the idle ones, most recently used first
  PoolClient* waiters_ = nullptr;  // FIFO head
  PoolClient* waiters_tail_ = nullptr;
  unsigned waiting_ = 0;
  unsigned starting_ = 0;  // servers logging in that no client has been granted yet
  std::uint64_t retry_after_ms_ = 0;
  unsigned clients_ = 0;  // sessions that use this pool (it lives while they do)
  std::unique_ptr<NotifyHub> hub_;
};

template <typename F>
void PoolSet::forEachServer(F f) const {
  for (const auto& [key, pool] : pools_) {
    pool->forEachServer(f);
  }
}

}  // namespace pgproxy::pool
