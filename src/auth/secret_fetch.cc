#include "pgproxy/auth/secret_fetch.h"

#include <event2/event.h>
#include <openssl/ssl.h>
#include <unistd.h>

#include <cerrno>
#include <vector>

#include "pgproxy/base/clock.h"
#include "pgproxy/base/text.h"
#include "pgproxy/log/log.h"
#include "pgproxy/net/stream_io.h"
#include "pgproxy/proto/wire.h"
#include "pgproxy/session/context.h"
#include "pgproxy/upstream/connector.h"

namespace pgproxy::auth {
using net::wouldBlock;

// One lookup: the session's backends in turn (its route's, or the mapping's own; those the
// health table holds up first) until one answers, then the SecretQuery exchange on that
// connection. Connection failures and a backend
// that does not answer within connect_timeout move on to the next backend; a backend's refusal
// of auth.user or an error of the query ends the lookup (another backend of the mapping would
// say the same).
class SecretFetch {
 public:
  SecretFetch(SecretLookups& owner, std::size_t mapping, std::uint64_t backends, std::string user,
              std::string key)
      : owner_(owner),
        mapping_(mapping),
        backends_(backends),
        user_(std::move(user)),
        key_(std::move(key)) {}
  ~SecretFetch() {
    closeConnection();
    if (timer_) {
      event_free(timer_);
    }
  }
  SecretFetch(const SecretFetch&) = delete;
  SecretFetch& operator=(const SecretFetch&) = delete;

  void start();
  const std::string& key() const { return key_; }
  const std::string& user() const { return user_; }

  // The logins waiting for this lookup.
  SecretWait* waiters = nullptr;
  bool queued = false;

 private:
  static void onConnected(void* arg, upstream::Connector::Result r);
  static void onSocket(int fd, short what, void* arg);
  static void onTimeout(int fd, short what, void* arg);
  void nextBackend();
  void readable();
  void flush();
  // The backend failed before it answered: the next one, or the lookup fails with 08006.
  void backendFailed(const std::string& why);
  void finish(SecretAnswer answer);
  void closeConnection();
  std::string backendKey() const;

  SecretLookups& owner_;
  std::size_t mapping_;
  std::uint64_t backends_;  // bit i: the mapping's backends[i] may answer
  std::string user_, key_;
  std::vector<std::size_t> order_;  // backends to try
  std::size_t next_ = 0;            // into order_
  std::size_t backend_ = 0;         // the one being tried
  std::string last_error_;
  std::unique_ptr<upstream::Connector> connector_;
  std::unique_ptr<SecretQuery> query_;
  int fd_ = -1;
  SSL* ssl_ = nullptr;
  event* read_ev_ = nullptr;
  event* write_ev_ = nullptr;
  event* timer_ = nullptr;
  std::string out_;
  std::uint64_t started_us_ = 0;
};

std::string SecretFetch::backendKey() const {
  return owner_.ctx().config->mappings[mapping_].backends[backend_].key();
}

void SecretFetch::start() {
  session::Context& ctx = owner_.ctx();
  const auto& backends = ctx.config->mappings[mapping_].backends;
  for (int pass = 0; pass < 2; ++pass) {
    for (std::size_t i = 0; i < backends.size(); ++i) {
      bool down = ctx.backends->health(ctx.backend_slots[mapping_][i]) == upstream::Health::kDown;
      // Backends believed down come last: the health table may be stale, and a lookup that fails
      // refuses the login.
      if (down == (pass == 1) && i < 64 && (backends_ & (1ull << i))) {
        order_.push_back(i);
      }
    }
  }
  started_us_ = base::monotonicUs();
  timer_ = evtimer_new(ctx.base, onTimeout, this);
  nextBackend();
}

void SecretFetch::nextBackend() {
  closeConnection();
  if (next_ >= order_.size()) {
    SecretAnswer a;
    a.kind = SecretAnswer::Kind::kFailed;
    a.sqlstate = proto::sqlstate::kConnectionFailure;
    a.error = last_error_.empty() ? "the mapping has no backend" : last_error_;
    finish(std::move(a));
    return;
  }
  session::Context& ctx = owner_.ctx();
  backend_ = order_[next_++];
  const auto& m = ctx.config->mappings[mapping_];
  const auto& b = m.backends[backend_];
  // The backend leg as the mapping's sessions and pooled servers have it.
  upstream::ConnectTarget t =
      upstream::ownConnection(m, b, ctx.tls ? ctx.tls->backend(mapping_) : nullptr);
  connector_ = std::make_unique<upstream::Connector>(ctx.base, ctx.dns, *ctx.config);
  // The connector's answer may come before start() returns; nothing follows the call.
  connector_->start(std::move(t), onConnected, this);
}

void SecretFetch::onConnected(void* arg, upstream::Connector::Result r) {
  auto* f = static_cast<SecretFetch*>(arg);
  if (r.fd < 0) {
    f->backendFailed(r.error);
    return;
  }
  session::Context& ctx = f->owner_.ctx();
  f->fd_ = r.fd;
  f->ssl_ = r.ssl;
  const auto& auth = ctx.config->auth;
  SecretQuery::Settings s;
  s.login_user = auth.query_user;
  // The loader made sure auth.user is in the file.
  if (const UserSecret* secret = auth.users ? auth.users->find(auth.query_user) : nullptr) {
    s.credentials = fileCredentials(*secret);
  }
  s.database = auth.query_database;
  s.sql = auth.query;
  f->query_ = std::make_unique<SecretQuery>(std::move(s), f->user_);
  f->out_ = f->query_->start();
  f->read_ev_ = event_new(ctx.base, f->fd_, EV_READ | EV_PERSIST, onSocket, f);
  f->write_ev_ = event_new(ctx.base, f->fd_, EV_WRITE | EV_PERSIST, onSocket, f);
  event_add(f->read_ev_, nullptr);
  // The login and the query get connect_timeout too, as a session's own login does.
  std::uint64_t ms = ctx.config->connect_timeout_ms;
  timeval tv{static_cast<time_t>(ms / 1000), static_cast<suseconds_t>((ms % 1000) * 1000)};
  evtimer_add(f->timer_, &tv);
  f->connector_.reset();  // inside its callback: it returns without touching itself
  f->flush();
}

void SecretFetch::onSocket(int, short what, void* arg) {
  auto* f = static_cast<SecretFetch*>(arg);
  if (what & EV_WRITE) {
    f->flush();
    return;
  }
  f->readable();
}

void SecretFetch::onTimeout(int, short, void* arg) {
  static_cast<SecretFetch*>(arg)->backendFailed("no answer to auth.query within connect_timeout");
}

void SecretFetch::flush() {
  int err = 0;
  switch (net::drainPending(fd_, ssl_, out_, err)) {
    case net::Drain::kBlocked:
      event_add(write_ev_, nullptr);
      return;
    case net::Drain::kFailed:
      backendFailed("cannot write to the backend: " + base::errnoText(err));
      return;
    case net::Drain::kDone:
      event_del(write_ev_);
      return;
  }
}

void SecretFetch::readable() {
  int err = 0;
  char* buffer = net::ioBuffer();
  ssize_t n = net::streamRead(fd_, ssl_, buffer, net::kIoChunk, err);
  if (n < 0 && (wouldBlock(err) || err == EINTR)) {
    return;
  }
  if (n <= 0) {
    backendFailed(n == 0 ? "the backend closed the connection"
                         : "the backend connection failed: " + base::errnoText(err));
    return;
  }
  SecretQuery::Step step =
      query_->feed(std::string_view(buffer, static_cast<std::size_t>(n)), out_);
  SecretAnswer a;
  switch (step.kind) {
    case SecretQuery::Step::kContinue:
      flush();
      return;
    case SecretQuery::Step::kAbsent:
      a.kind = SecretAnswer::Kind::kAbsent;
      break;
    case SecretQuery::Step::kFound: {
      auto secret = classifySecret(step.secret);
      if (!secret.ok()) {
        a.kind = SecretAnswer::Kind::kFailed;
        a.sqlstate = proto::sqlstate::kInvalidAuthorization;
        a.error = "auth.query returned a secret pgproxy cannot use: " + secret.error().message;
        break;
      }
      a.kind = SecretAnswer::Kind::kFound;
      a.secret = std::make_shared<const UserSecret>(std::move(*secret));
      break;
    }
    case SecretQuery::Step::kFailed:
      a.kind = SecretAnswer::Kind::kFailed;
      a.sqlstate = proto::sqlstate::kInvalidAuthorization;
      a.error = step.error;
      break;
  }
  if (a.kind == SecretAnswer::Kind::kFailed) {
    a.error += " (backend " + backendKey() + ")";
  }
  // Goodbye, so that the backend does not log an unexpected EOF; best effort, the socket closes
  // right after.
  out_ = proto::buildMessage('X', "");
  int ignored = 0;
  (void)net::drainPending(fd_, ssl_, out_, ignored);
  finish(std::move(a));
}

void SecretFetch::backendFailed(const std::string& why) {
  last_error_ = "could not connect to backend " + backendKey() + ": " + why;
  LOG_INFO("auth.query for user \"%s\": %s", user_.c_str(), last_error_.c_str());
  nextBackend();
}

void SecretFetch::closeConnection() {
  connector_.reset();
  query_.reset();
  for (event** ev : {&read_ev_, &write_ev_}) {
    if (*ev) {
      event_free(*ev);
      *ev = nullptr;
    }
  }
  if (timer_) {
    evtimer_del(timer_);
  }
  if (ssl_) {
    SSL_free(ssl_);
    ssl_ = nullptr;
  }
  if (fd_ >= 0) {
    ::close(fd_);
    fd_ = -1;
  }
  out_.clear();
}

void SecretFetch::finish(SecretAnswer answer) {
  closeConnection();
  if (timer_) {
    event_free(timer_);
    timer_ = nullptr;
  }
  const char* what = answer.kind == SecretAnswer::Kind::kFound    ? "found"
                     : answer.kind == SecretAnswer::Kind::kAbsent ? "not found"
                                                                  : "failed";
  LOG_DEBUG("auth.query for user \"%s\": %s in %llu us", user_.c_str(), what,
            static_cast<unsigned long long>(base::monotonicUs() - started_us_));
  owner_.finished(this, std::move(answer));  // frees this object later
}

// ---- SecretLookups ---------------------------------------------------------------------------

SecretLookups::SecretLookups(session::Context& ctx) : ctx_(ctx), cache_(ctx.config->auth.cache_ms) {
  reaper_ = evtimer_new(ctx_.base, onReap, this);
}

SecretLookups::~SecretLookups() {
  event_free(reaper_);
  // Whatever still runs is dropped: the worker is going away and its sessions are gone.
}

bool SecretLookups::lookup(std::size_t mapping, std::uint64_t backends, const std::string& user,
                           SecretWait& wait, SecretAnswer& answer) {
  // Routes to different clusters may know the same user by different secrets.
  std::string key = std::to_string(mapping) + ':' + std::to_string(backends) + ':' + user;
  std::shared_ptr<const UserSecret> cached;
  if (cache_.get(key, base::monotonicMs(), cached)) {
    ctx_.metrics.add(metrics::Counter::kAuthQueryCacheHits);
    answer = SecretAnswer{};
    answer.kind = cached ? SecretAnswer::Kind::kFound : SecretAnswer::Kind::kAbsent;
    answer.secret = std::move(cached);
    return true;
  }
  auto it = fetches_.find(key);
  if (it == fetches_.end()) {
    auto fetch = std::make_unique<SecretFetch>(*this, mapping, backends, user, key);
    // Started from the loop, never here: a connection that fails at once must not answer the
    // waiter inside this call.
    fetch->queued = true;
    queue_.push_back(fetch.get());
    it = fetches_.emplace(std::move(key), std::move(fetch)).first;
    timeval now{0, 0};
    evtimer_add(reaper_, &now);
  }
  SecretFetch* f = it->second.get();
  wait.fetch = f;
  wait.prev = nullptr;
  wait.next = f->waiters;
  if (f->waiters) {
    f->waiters->prev = &wait;
  }
  f->waiters = &wait;
  return false;
}

void SecretLookups::cancel(SecretWait& wait) {
  SecretFetch* f = wait.fetch;
  if (!f) {
    return;
  }
  if (wait.prev) {
    wait.prev->next = wait.next;
  } else {
    f->waiters = wait.next;
  }
  if (wait.next) {
    wait.next->prev = wait.prev;
  }
  wait.fetch = nullptr;
  wait.next = wait.prev = nullptr;
  if (!f->waiters && f->queued) {
    // Nobody wants it any more and it has not started: it never will. (One under way goes on: its
    // answer fills the cache for the login that comes back.)
    for (auto q = queue_.begin(); q != queue_.end(); ++q) {
      if (*q == f) {
        queue_.erase(q);
        break;
      }
    }
    fetches_.erase(f->key());
  }
}

void SecretLookups::finished(SecretFetch* fetch, SecretAnswer answer) {
  --running_;
  switch (answer.kind) {
    case SecretAnswer::Kind::kFound:
      ctx_.metrics.add(metrics::Counter::kAuthQueryFound);
      cache_.put(fetch->key(), answer.secret, base::monotonicMs());
      break;
    case SecretAnswer::Kind::kAbsent:
      ctx_.metrics.add(metrics::Counter::kAuthQueryAbsent);
      cache_.put(fetch->key(), nullptr, base::monotonicMs());
      break;
    case SecretAnswer::Kind::kFailed:
      // Not cached: the next login asks again.
      ctx_.metrics.add(metrics::Counter::kAuthQueryFailed);
      break;
  }
  auto it = fetches_.find(fetch->key());
  dead_.push_back(std::move(it->second));  // we are inside its callbacks
  fetches_.erase(it);
  timeval now{0, 0};
  evtimer_add(reaper_, &now);
  // Each waiter leaves the list before it hears: its answer may close its session, which then
  // cancels nothing, or other sessions' waits, which leave the list the same way.
  while (SecretWait* w = fetch->waiters) {
    fetch->waiters = w->next;
    if (w->next) {
      w->next->prev = nullptr;
    }
    w->fetch = nullptr;
    w->next = w->prev = nullptr;
    w->done(w->owner, answer);
  }
}

void SecretLookups::onReap(int, short, void* arg) {
  auto* l = static_cast<SecretLookups*>(arg);
  l->dead_.clear();
  l->startQueued();
}

void SecretLookups::startQueued() {
  while (running_ < kMaxRunning && !queue_.empty()) {
    SecretFetch* f = queue_.front();
    queue_.pop_front();
    f->queued = false;
    ++running_;
    f->start();  // may end at once (finished() then queues the reaper again)
  }
}

}  // namespace pgproxy::auth
