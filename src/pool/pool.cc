#include "pgproxy/pool/pool.h"

#include <event2/event.h>

#include <cstdint>
#include <vector>

#include "pgproxy/admin/control.h"
#include "pgproxy/base/clock.h"
#include "pgproxy/log/log.h"
#include "pgproxy/pool/link.h"
#include "pgproxy/pool/notify_hub.h"
#include "pgproxy/pool/server_conn.h"
#include "pgproxy/session/context.h"

namespace pgproxy::pool {
namespace {

// How often a worker looks at its pools: waiting clients of other workers get an idle server
// within about this long, and a waiting client notices a cap freed elsewhere.
constexpr std::uint64_t kTickMs = 20;
constexpr std::uint64_t kMaintenanceMs = 1000;
// A server idle this long while another worker's clients wait is one this worker does not need
// now. Shorter, and a steady load on a busy machine (a client descheduled for a moment) makes the
// workers trade servers back and forth, a new backend each time.
constexpr std::uint64_t kGiveUpIdleMs = 100;
// After a server failed to connect or log in, new ones wait this long (no connect storm against
// a backend that is down).
constexpr std::uint64_t kRetryAfterFailureMs = 1000;

template <typename T>
void listPush(T*& head, T* x, T* T::*next, T* T::*prev) {
  x->*prev = nullptr;
  x->*next = head;
  if (head) {
    head->*prev = x;
  }
  head = x;
}

template <typename T>
void listRemove(T*& head, T* x, T* T::*next, T* T::*prev) {
  if (x->*prev) {
    x->*prev->*next = x->*next;
  } else {
    head = x->*next;
  }
  if (x->*next) {
    x->*next->*prev = x->*prev;
  }
  x->*next = x->*prev = nullptr;
}

}  // namespace

// ---- PoolSet ----------------------------------------------------------------------------------

PoolSet::PoolSet(session::Context& ctx) : ctx_(ctx) {
  timer_ = event_new(ctx_.base, -1, EV_PERSIST, onTick, this);
  reaper_ = event_new(ctx_.base, -1, 0, onReap, this);
}

PoolSet::~PoolSet() {
  for (auto& [key, pool] : pools_) {
    pool->closeAll();
  }
  dead_.clear();
  pools_.clear();
  event_free(timer_);
  event_free(reaper_);
}

Pool* PoolSet::get(std::size_t mapping, std::size_t backend, const std::string& user,
                   const std::string& database, std::string& error) {
  auto key = std::make_tuple(mapping, backend, user, database);
  auto it = pools_.find(key);
  if (it != pools_.end()) {
    return it->second.get();
  }
  const auto& m = ctx_.config->mappings[mapping];
  const std::string backend_key = m.backends[backend].key();
  std::size_t shared = ctx_.shared_pools->openPool(m.external, backend_key, user, database);
  std::size_t shared_db = kNoPool;
  if (shared != kNoPool && m.pool.max_db_connections > 0) {
    shared_db = ctx_.shared_pools->openDatabase(backend_key, database);
    if (shared_db == kNoPool) {
      ctx_.shared_pools->close(shared);
      shared = kNoPool;
    }
  }
  if (shared == kNoPool) {
    error = "pgproxy's pool table is full (" + std::to_string(kMaxPools) +
            " pools of users and databases at once)";
    return nullptr;
  }
  auto pool = std::make_unique<Pool>(*this, mapping, backend, user, database, shared, shared_db);
  Pool* p = pool.get();
  if (pools_.empty()) {
    // The tick runs only while the worker has pools: a worker without pooled mappings has none.
    timeval tv{0, static_cast<suseconds_t>(kTickMs * 1000)};
    event_add(timer_, &tv);
  }
  pools_.emplace(std::move(key), std::move(pool));
  return p;
}

void PoolSet::drain() {
  draining_ = true;
  for (auto& [key, pool] : pools_) {
    pool->tick(base::monotonicMs(), true);
  }
}

void PoolSet::bury(ServerConn* s) {
  dead_.emplace_back(s);
  event_active(reaper_, EV_TIMEOUT, 0);
}

void PoolSet::onReap(int, short, void* arg) {
  static_cast<PoolSet*>(arg)->dead_.clear();
}

void PoolSet::onTick(int, short, void* arg) {
  static_cast<PoolSet*>(arg)->tick();
}

void PoolSet::tick() {
  std::uint64_t now = base::monotonicMs();
  bool maintenance = now - last_maintenance_ms_ >= kMaintenanceMs;
  if (maintenance) {
    last_maintenance_ms_ = now;
  }
  for (auto it = pools_.begin(); it != pools_.end();) {
    it->second->tick(now, maintenance);
    if (maintenance && it->second->unused()) {
      it = pools_.erase(it);
      continue;
    }
    ++it;
  }
  if (pools_.empty()) {
    event_del(timer_);
  }
}

// ---- Pool -------------------------------------------------------------------------------------

Pool::Pool(PoolSet& set, std::size_t mapping, std::size_t backend, std::string user,
           std::string database, std::size_t shared, std::size_t shared_db)
    : set_(set),
      mapping_(mapping),
      backend_(backend),
      user_(std::move(user)),
      database_(std::move(database)),
      shared_(shared),
      shared_db_(shared_db) {}

Pool::~Pool() {
  hub_.reset();
  closeAll();
  SharedPools& shared = *set_.ctx().shared_pools;
  shared.close(shared_);
  if (shared_db_ != kNoPool) {
    shared.close(shared_db_);
  }
}

NotifyHub& Pool::notifyHub() {
  if (!hub_) {
    hub_ = std::make_unique<NotifyHub>(*this);
  }
  return *hub_;
}

const config::PoolConfig& Pool::config() const {
  return set_.ctx().config->mappings[mapping_].pool;
}

std::string Pool::describe() const {
  const auto& m = set_.ctx().config->mappings[mapping_];
  return user_ + "@" + database_ + " on " + m.backends[backend_].key();
}

const ServerConn* Pool::nextServer(const ServerConn* s) {
  return s->all_next;
}

std::size_t Pool::reconnect() {
  std::size_t n = 0;
  for (ServerConn* s = servers_; s;) {
    ServerConn* next = s->all_next;
    ++n;
    if (s->in_idle) {
      s->close("RECONNECT from the console");
    } else {
      s->close_needed = true;
    }
    s = next;
  }
  return n;
}

std::size_t PoolSet::reconnect(std::size_t mapping) {
  std::size_t n = 0;
  for (auto& [key, pool] : pools_) {
    if (pool->mapping() == mapping) {
      n += pool->reconnect();
    }
  }
  return n;
}

void Pool::closeAll() {
  while (servers_) {
    servers_->close("pgproxy is closing the pool");
  }
  std::string error =
      proto::buildFatal(proto::sqlstate::kCannotConnectNow, "pgproxy is shutting down this pool");
  refuseAll(error);
}

void Pool::pushWaiter(PoolClient* c) {
  c->waiting = true;
  c->wait_since_us = base::monotonicUs();
  c->wait_next = nullptr;
  c->wait_prev = waiters_tail_;
  if (waiters_tail_) {
    waiters_tail_->wait_next = c;
  } else {
    waiters_ = c;
  }
  waiters_tail_ = c;
  ++waiting_;
  set_.ctx().shared_pools->addWaiting(shared_, 1);
  if (shared_db_ != kNoPool) {
    set_.ctx().shared_pools->addWaiting(shared_db_, 1);
  }
}

void Pool::popWaiter(PoolClient* c) {
  if (!c->waiting) {
    return;
  }
  (c->wait_prev ? c->wait_prev->wait_next : waiters_) = c->wait_next;
  (c->wait_next ? c->wait_next->wait_prev : waiters_tail_) = c->wait_prev;
  c->wait_next = c->wait_prev = nullptr;
  c->waiting = false;
  --waiting_;
  set_.ctx().shared_pools->addWaiting(shared_, -1);
  if (shared_db_ != kNoPool) {
    set_.ctx().shared_pools->addWaiting(shared_db_, -1);
  }
}

void Pool::cancelWait(PoolClient* c) {
  popWaiter(c);
}

void Pool::refuseAll(const std::string& error) {
  while (waiters_) {
    PoolClient* c = waiters_;
    popWaiter(c);
    c->refused(error);
  }
}

ServerConn* Pool::takeIdle() {
  ServerConn* s = idle_;
  if (s) {
    listRemove(idle_, s, &ServerConn::idle_next, &ServerConn::idle_prev);
    s->in_idle = false;
  }
  return s;
}

bool Pool::paused() const {
  const session::Context& ctx = set_.ctx();
  return ctx.control && ctx.control->paused(ctx.mapping_metric[mapping_]);
}

void Pool::grantWaiters() {
  while (waiters_) {
    ServerConn* s = takeIdle();
    if (!s) {
      return;
    }
    if (s->stillIdle()) {
      giveOrKeep(s);
    }
  }
}

void Pool::acquire(PoolClient* c) {
  pushWaiter(c);
  if (paused()) {
    // PAUSE: it waits in the FIFO until RESUME (the tick grants it then). A pool that has not
    // yet learnt its servers' parameters opens one anyway, so that new clients can log in
    // during the pause (as with PgBouncer) and only their queries wait.
    if (welcome_.empty() && starting_ == 0) {
      startServer(config().size);
    }
    return;
  }
  while (ServerConn* s = takeIdle()) {
    if (s->stillIdle()) {
      giveOrKeep(s);
      return;
    }
  }
  if (starting_ < waiting_) {
    startServer(config().size);
  }
}

bool Pool::startServer(unsigned cap) {
  std::uint64_t now = base::monotonicMs();
  if (now < retry_after_ms_) {
    return false;
  }
  const config::PoolConfig& pc = config();
  if (!set_.ctx().shared_pools->tryAddServer(shared_, cap, shared_db_, pc.max_db_connections)) {
    return false;
  }
  auto* s = new ServerConn(*this, set_.nextServerId());
  LOG_DEBUG("pool %s: opening server connection %llu", describe().c_str(),
            static_cast<unsigned long long>(s->id()));
  listPush(servers_, s, &ServerConn::all_next, &ServerConn::all_prev);
  ++starting_;
  s->start();  // may fail at once (and be buried) before this returns
  return true;
}

bool Pool::startDedicated(PoolClient* c) {
  const config::PoolConfig& pc = config();
  if (base::monotonicMs() < retry_after_ms_ ||
      !set_.ctx().shared_pools->tryAddServer(shared_, 0, shared_db_, pc.max_db_connections, true)) {
    return false;
  }
  auto* s = new ServerConn(*this, set_.nextServerId());
  s->dedicated = true;
  s->dedicated_to = c;
  listPush(servers_, s, &ServerConn::all_next, &ServerConn::all_prev);
  s->start();  // may fail at once (and be buried) before this returns
  return true;
}

void Pool::cancelDedicated(PoolClient* c) {
  for (ServerConn* s = servers_; s; s = s->all_next) {
    if (s->dedicated_to == c) {
      s->dedicated_to = nullptr;
    }
  }
}

void Pool::grant(ServerConn* s, PoolClient* c) {
  popWaiter(c);
  set_.ctx().shared_pools->observeWait(shared_, base::monotonicUs() - c->wait_since_us);
  c->granted(s);
}

void Pool::giveOrKeep(ServerConn* s) {
  const config::PoolConfig& pc = config();
  std::uint64_t now = base::monotonicMs();
  if (s->close_needed) {
    s->close("RECONNECT from the console");
    return;
  }
  if (set_.draining() && clients_ == 0) {
    // A newer generation serves new clients; this worker keeps servers only for its own.
    s->close("this worker is draining (a reload replaced it)");
    return;
  }
  if (pc.server_lifetime_ms && now - s->createdMs() >= pc.server_lifetime_ms) {
    s->close("server_lifetime reached");
    return;
  }
  if (waiters_ && !paused()) {
    if (s->idleSinceMs() && now - s->idleSinceMs() >= pc.server_check_delay_ms && !s->for_check) {
      // Idle long enough that it may have died quietly: check it before a client gets it.
      s->runInternal(pc.server_check_query, true);
      return;
    }
    s->for_check = false;
    grant(s, waiters_);
    return;
  }
  if (!s->for_check) {
    s->markIdle();  // a check that just ran keeps the idle clock it had
  }
  s->for_check = false;
  s->setSharedState(ServerState::kIdle);
  listPush(idle_, s, &ServerConn::idle_next, &ServerConn::idle_prev);
  s->in_idle = true;
}

void Pool::release(ServerConn* s) {
  const config::PoolConfig& pc = config();
  if (pc.mode == config::PoolMode::kSession && !pc.server_reset_query.empty()) {
    s->runInternal(pc.server_reset_query, false);
    return;
  }
  s->markIdle();
  giveOrKeep(s);
}

void Pool::serverUp(ServerConn* s) {
  if (!s->dedicated) {
    --starting_;
  }
  if (welcome_.empty()) {
    welcome_ = s->params();
    // Clients that came before any server had logged in wait for their greeting only: they get
    // it now rather than a server each (in session mode they would keep one idle, and a client
    // that waits for all its connections before it starts, as pgbench does, would wait for ever).
    for (PoolClient* c = waiters_; c;) {
      PoolClient* next = c->wait_next;
      c->welcomed();
      c = next;
    }
  }
  if (s->dedicated) {
    PoolClient* c = s->dedicated_to;
    s->dedicated_to = nullptr;
    if (c) {
      c->granted(s);
    } else {
      s->close("its client left before it was up");
    }
    return;
  }
  giveOrKeep(s);
}

void Pool::serverIdle(ServerConn* s) {
  giveOrKeep(s);
}

void Pool::serverLoginFailed(ServerConn* s, std::string error, bool refused_by_server) {
  if (s->dedicated) {
    PoolClient* c = s->dedicated_to;
    serverGone(s);
    if (c) {
      c->refused(std::move(error));
    }
    return;
  }
  --starting_;
  retry_after_ms_ = base::monotonicMs() + kRetryAfterFailureMs;
  serverGone(s);
  // A server that refused this user refuses every waiting client of it; a backend that cannot be
  // reached fails the clients that have no server of this pool to hope for.
  if (refused_by_server || servers_ == nullptr) {
    refuseAll(error);
  }
}

void Pool::serverGone(ServerConn* s) {
  if (s->in_idle) {
    listRemove(idle_, s, &ServerConn::idle_next, &ServerConn::idle_prev);
    s->in_idle = false;
  }
  listRemove(servers_, s, &ServerConn::all_next, &ServerConn::all_prev);
  set_.ctx().shared_pools->removeServer(shared_, shared_db_, s->sharedState(), s->dedicated);
  set_.bury(s);
}

bool Pool::aboveShare(unsigned idle) const {
  const SharedPools& shared = *set_.ctx().shared_pools;
  PoolShare share;
  share.size = config().size;
  for (ServerConn* s = servers_; s; s = s->all_next) {
    share.mine += s->dedicated ? 0 : 1;
  }
  share.my_idle = idle;
  share.my_waiting = waiting_;
  share.all = shared.servers(shared_);
  share.all_idle = shared.serversIn(shared_, ServerState::kIdle);
  share.all_waiting = shared.waiting(shared_);
  return pool::aboveShare(share);
}

void Pool::tick(std::uint64_t now, bool maintenance) {
  const config::PoolConfig& pc = config();
  // Waiting clients: the oldest first.
  while (waiters_ && pc.query_wait_timeout_ms &&
         base::monotonicUs() - waiters_->wait_since_us >= pc.query_wait_timeout_ms * 1000) {
    PoolClient* c = waiters_;
    popWaiter(c);
    c->refused(proto::buildFatal(proto::sqlstate::kProtocolViolation, "query_wait_timeout"));
  }
  const bool held = paused();
  if (!held) {
    grantWaiters();  // after a RESUME: the clients PAUSE held get the idle servers first
  }
  if (waiters_ && starting_ < waiting_ && !held) {
    bool reserve = pc.reserve_size > 0 &&
                   base::monotonicUs() - waiters_->wait_since_us >= pc.reserve_timeout_ms * 1000;
    startServer(pc.size + (reserve ? pc.reserve_size : 0));
  }
  // Clients of another worker wait for this pool's cap while a server idles here, or clients of
  // another pool wait for the database's cap (max_db_connections): give one up.
  SharedPools& shared = *set_.ctx().shared_pools;
  bool others_wait = idle_ && shared.waiting(shared_) > shared.myWaiting(shared_);
  bool other_pools_wait = false;
  if (idle_ && !others_wait && shared_db_ != kNoPool && pc.max_db_connections > 0) {
    other_pools_wait = shared.waiting(shared_db_) > shared.waiting(shared_) &&
                       shared.servers(shared_db_) >= pc.max_db_connections;
  }
  if (others_wait || other_pools_wait) {
    ServerConn* oldest = idle_;
    unsigned idle = 1;
    while (oldest->idle_next) {
      oldest = oldest->idle_next;
      ++idle;
    }
    // Only a server this worker has not needed for a while, and only while it holds more than
    // its share of the pool: under a steady load every worker has a server idle for a moment
    // between transactions while another's clients queue, and giving those up closed and
    // reopened servers all the time (a new backend each, the waiting client waiting for its
    // login) for no gain in fairness.
    if (now - oldest->idleSinceMs() >= kGiveUpIdleMs && (other_pools_wait || aboveShare(idle))) {
      oldest->close("clients elsewhere wait for this pool or its database");
    }
  }
  if (!maintenance) {
    return;
  }
  session::Context& ctx = set_.ctx();
  const bool backend_down =
      ctx.backends->health(ctx.backend_slots[mapping_][backend_]) == upstream::Health::kDown;
  for (ServerConn* s = idle_; s;) {
    ServerConn* next = s->idle_next;
    if (backend_down) {
      // Health checks (or failed connections) say the backend is gone: its idle servers are
      // likely dead too, and a failover may bring another server at the same address.
      s->close("the backend is marked down");
    } else if (set_.draining() && clients_ == 0) {
      s->close("this worker is draining (a reload replaced it)");
    } else if (pc.server_idle_timeout_ms && now - s->idleSinceMs() >= pc.server_idle_timeout_ms &&
               shared.servers(shared_) > pc.min_size) {
      // min_size servers stay open however long they idle: closing them only to reopen them
      // would make them cold.
      s->close("server_idle_timeout reached");
    } else if (pc.server_lifetime_ms && now - s->createdMs() >= pc.server_lifetime_ms) {
      s->close("server_lifetime reached");
    }
    s = next;
  }
  if (pc.min_size > 0 && !set_.draining() && starting_ == 0 &&
      credentials_.kind != auth::ServerCredentials::Kind::kNone &&
      shared.servers(shared_) < pc.min_size) {
    startServer(pc.min_size);
  }
}

}  // namespace pgproxy::pool
