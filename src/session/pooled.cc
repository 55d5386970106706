// Pooled mappings: once pgproxy has authenticated the client (authenticate.cc), the session has
// no backend of its own. It greets the client with the parameters its pool's servers report and
// a BackendKeyData of pgproxy's, then reads the client's messages and borrows a server from the
// pool for each transaction (transaction mode), each statement (statement mode) or the whole
// session (session mode). Before a server is used for this client it gets the client's state
// (the parameters it set), and ParameterStatus from the server keeps that state current.
#include <event2/event.h>
#include <openssl/rand.h>
#include <openssl/ssl.h>

#include <cerrno>

#include "pgproxy/audit/audit.h"
#include "pgproxy/base/clock.h"
#include "pgproxy/base/text.h"
#include "pgproxy/log/log.h"
#include "pgproxy/net/stream_io.h"
#include "pgproxy/pool/server_conn.h"
#include "pgproxy/session/pooled.h"
#include "pgproxy/session/session.h"
#include "pgproxy/sql/read_only.h"

namespace pgproxy::session {
using net::kMaxAhead;
using net::kReadsPerWakeup;
using net::wouldBlock;

void Session::startPooled() {
  const auto& m = ctx_.config->mappings[mapping_];
  proto::StartupParams startup;
  (void)proto::parseStartup(startup_, startup);  // acceptStartup checked it
  std::string().swap(startup_);
  pool::StartupSplit split;
  std::string refusal = pool::splitStartup(startup.params, split);
  if (!refusal.empty()) {
    refuse(Outcome::kProtocolError, proto::sqlstate::kFeatureNotSupported, "pgproxy: " + refusal);
    return;
  }
  if (!admitted_ && !admit()) {
    return;
  }
  // read_write_split: the session's home is a primary, and each transaction that only reads
  // may go to a standby. A role the client or a route asked for decides alone.
  bool rw_split = m.read_write_split && role_ == config::BackendRole::kAny && !prefer_standby_;
  if (rw_split) {
    role_ = config::BackendRole::kPrimary;
  }
  if (!pickBackend()) {
    failSession(Outcome::kBackendUnreachable,
                "no backend for \"" + m.external + "\" is available (health checks)",
                proto::sqlstate::kCannotConnectNow);
    return;
  }
  std::string error;
  pool::Pool* pool = ctx_.pools->get(mapping_, backend_index_, split.user, split.database, error);
  if (!pool) {
    failSession(Outcome::kTooManyClients, error, proto::sqlstate::kTooManyConnections);
    return;
  }
  if (audit::enabled()) {
    auditRoute(backend().key(), "pool of database \"" + split.database + "\" for user \"" +
                                    split.user + "\", " + routeReason() +
                                    (rw_split ? ", read/write split" : ""));
  }
  if (audit::enabled() && audit::settings().statements != config::AuditStatements::kNone) {
    // The client's stream is between messages: authentication consumed its login.
    taps().up =
        std::make_unique<proto::MessageFramer>(proto::MessageFramer::Framing::kPgMessages, true, 0);
  }
  pooled_ = std::make_unique<Pooled>(*this);
  pooled_->session_id = id_;
  pooled_->pool = pool;
  if (rw_split) {
    pooled_->split = std::make_unique<Pooled::Split>();
    pooled_->split->home = pool;
  }
  pool->addClient(1);
  pool->setCredentials(client_auth_->serverCredentials());
  client_auth_.reset();
  pooled_->params = std::move(split.reported);
  pooled_->extras = std::move(split.extras);
  // pgproxy's own cancel key: random, so that it cannot be guessed, and registered so that any
  // worker can find this client's server.
  unsigned char key[8];
  RAND_bytes(key, sizeof(key));
  pooled_->key_pid =
      cancel::issuedPid(proto::readU32(reinterpret_cast<char*>(key)), ctx_.config->instance_id);
  pooled_->key_secret = proto::readU32(reinterpret_cast<char*>(key) + 4);
  cancel_slot_ = ctx_.cancels->claim(static_cast<std::int32_t>(getpid()));
  std::string secret;
  proto::appendU32(secret, pooled_->key_secret);
  ctx_.cancels->publishPooled(cancel_slot_, pooled_->key_pid, secret, m.backend_proxy_protocol);

  setState(State::kPooled);
  if (client_ssl_) {
    // One read per TLS record instead of two (its header, then its body): a transaction's query
    // is one small record. What OpenSSL reads ahead is invisible to epoll, so every read of a
    // pooled client ends by looking at SSL_has_pending (readPooledClient, holdClientReads).
    SSL_set_read_ahead(client_ssl_, 1);
  }
  endHandshake();
  ctx_.metrics.observe(metrics::Histogram::kHandshake, base::monotonicUs() - started_us_);
  if (timer_) {
    event_free(timer_);  // an idle pooled client holds no timer
    timer_ = nullptr;
  }
  if (!pool->welcome().empty()) {
    sendGreeting();
    if (state_ != State::kPooled) {
      return;
    }
    holdClientReads(false);
    return;
  }
  // The pool's first client: the greeting waits for a server to say what its parameters are.
  pool->acquire(pooled_.get());
}

void Session::sendGreeting() {
  Pooled& p = *pooled_;
  const pool::Params& welcome = p.pool->welcome();
  pool::Params told = welcome;
  pool::Params changed;  // the client keeps only what differs from its pool's servers
  for (const auto& [name, value] : p.params.entries()) {
    told.set(name, value);  // what the client asked for in its StartupMessage
    const std::string* base = welcome.get(name);
    if (!base || *base != value) {
      changed.set(name, value);
    }
  }
  p.params = std::move(changed);
  p.updateDigest();
  // After SCRAM the AuthenticationSASLFinal is already queued: AuthenticationOk follows it.
  std::string g("R\0\0\0\x08\0\0\0\0", 9);
  for (const auto& [name, value] : told.entries()) {
    g += pool::buildParameterStatus(name, value);
  }
  std::string key;
  proto::appendU32(key, p.key_pid);
  proto::appendU32(key, p.key_secret);
  g += proto::buildMessage('K', key);
  g += proto::buildMessage('Z', "I");
  p.greeted = true;
  writeToClient(g);
}

void Session::holdClientReads(bool hold) {
  Pooled& p = *pooled_;
  p.reading_held = hold;
  if (hold) {
    event_del(client_read_);
  } else {
    event_add(client_read_, nullptr);
    wakeForBufferedTls();
  }
}

// Records OpenSSL has read ahead wait in its buffer, not in the socket: no epoll event would
// bring them, so the read callback is run as if one had.
void Session::wakeForBufferedTls() {
  if (client_ssl_ && SSL_has_pending(client_ssl_)) {
    event_active(client_read_, EV_READ, 1);
  }
}

void Session::readPooledClient() {
  Pooled& p = *pooled_;
  for (int i = 0; i < kReadsPerWakeup && !p.reading_held; ++i) {
    int err = 0;
    char* buffer = net::ioBuffer();
    ssize_t n = readSide(true, buffer, net::kIoChunk, err);
    if (n == 0 || (n < 0 && !wouldBlock(err) && err != EINTR)) {
      // Gone without a Terminate: its server goes back only if nothing was in flight.
      close(p.flow.quiet() ? Outcome::kOk : Outcome::kClientClosedEarly);
      return;
    }
    if (n < 0) {
      return;
    }
    bytes_up_ += static_cast<std::uint64_t>(n);
    std::string_view bytes(buffer, static_cast<std::size_t>(n));
    if (ctx_.plugins && ctx_.plugins->has(plugin::Hook::kQuery)) {
      if (!pluginQueries(bytes)) {
        return;
      }
      bytes = taps_->gated;  // whole Query/Parse messages the plugins let through
      if (bytes.empty()) {
        continue;
      }
    }
    pool::ClientFlow::Fed fed = p.flow.feed(bytes);
    if (fed.bad) {
      refuse(Outcome::kProtocolError, proto::sqlstate::kProtocolViolation,
             "invalid message length from the client");
      return;
    }
    if (taps_) {
      tapMessages(true, bytes);
    }
    std::string_view forward = bytes.substr(0, fed.forward);
    if (p.server && !p.probing) {
      if (!forward.empty() && !p.toServer(forward)) {
        if (state_ != State::kPooled) {
          return;
        }
        holdClientReads(true);  // serverDrained() resumes
      }
      if (state_ != State::kPooled) {
        return;
      }
    } else if (!forward.empty()) {
      p.up.append(forward);
      if (!p.waiting && !p.server) {
        if (p.split) {
          choosePool();  // the transaction's first bytes are in: where it runs
        }
        p.pool->acquire(&p);
        if (state_ != State::kPooled) {
          return;
        }
      }
      if ((!p.server || p.probing) && p.up.size() >= kMaxAhead) {
        holdClientReads(true);  // linked() resumes, or the probe's answer
      }
    }
    if (fed.terminate) {
      close(Outcome::kOk);
      return;
    }
    if (static_cast<std::size_t>(n) < net::kIoChunk &&
        !(client_ssl_ && SSL_has_pending(client_ssl_))) {
      return;
    }
  }
  if (!p.reading_held) {
    wakeForBufferedTls();  // kReadsPerWakeup reached: the rest on the next turn of the loop
  }
}

bool Session::writeToClient(std::string_view bytes, bool more) {
  bytes_down_ += bytes.size();
  if (more && (to_client_.empty() || client_corked_)) {
    to_client_.append(bytes);  // sent with what follows, by the next call
    client_corked_ = true;
    return true;
  }
  if (client_corked_) {
    client_corked_ = false;
    to_client_.append(bytes);
    return flushPooledClient();
  }
  if (to_client_.empty()) {
    int err = 0;
    ssize_t w = writeSide(true, bytes.data(), bytes.size(), err);
    if (w < 0 && !wouldBlock(err) && err != EINTR) {
      close(Outcome::kClientClosedEarly);
      return false;
    }
    bytes.remove_prefix(w > 0 ? static_cast<std::size_t>(w) : 0);
    if (bytes.empty()) {
      return true;
    }
    event_add(client_write_, nullptr);
  }
  to_client_.append(bytes);
  return true;
}

bool Session::flushPooledClient() {
  int err = 0;
  switch (writePending(true, err)) {
    case WriteResult::kBlocked:
      return true;
    case WriteResult::kFailed:
      close(Outcome::kClientClosedEarly);
      return false;
    case WriteResult::kDone:
      if (pooled_->server) {
        pooled_->server->resumeReading();
      }
      return true;
  }
  return true;
}

void Session::unlinkPooled() {
  Pooled& p = *pooled_;
  if (p.waiting) {
    p.pool->cancelWait(&p);
  }
  if (p.server) {
    pool::ServerConn* s = p.server;
    p.server = nullptr;
    ctx_.cancels->unlinkPooled(cancel_slot_);
    // A pinned client's server holds what the client left on it (locks, temporary tables,
    // LISTEN): closed, never handed to another client.
    s->detach(p.flow.quiet() && !*p.pinned(), p.pinned());
  }
}

void Session::endPooled() {
  if (pooled_->listen && pooled_->listen->subscribed) {
    pooled_->hub().unsubscribeAll(pooled_.get());
  }
  unlinkPooled();
  if (pooled_->pinned_counted) {
    ctx_.shared_pools->addPinned(pooled_->pool->sharedEntry(), -1);
    pooled_->pinned_counted = false;
  }
  pooled_->pool->addClient(-1);
}

// ---- read_write_split ---------------------------------------------------------------------------

namespace {

// The SQL of the first message in `up` (the transaction's first): a Query's text, a Parse's
// query, or a Bind's named statement as the client prepared it. Empty when the message is not
// whole yet or carries no SQL pgproxy can see: the transaction then runs on the primary.
std::string_view firstSql(std::string_view up, const pool::PreparedTracker* prepared) {
  if (up.size() < 5) {
    return {};
  }
  std::uint32_t len = proto::readU32(up.data() + 1);
  if (len < 4 || up.size() - 1 < len) {
    return {};
  }
  std::string_view body = up.substr(5, len - 4);
  auto cstring = [&body]() {
    std::size_t nul = body.find('\0');
    std::string_view s = body.substr(0, nul == std::string_view::npos ? 0 : nul);
    body.remove_prefix(nul == std::string_view::npos ? body.size() : nul + 1);
    return s;
  };
  switch (up[0]) {
    case 'Q':
      return cstring();
    case 'P':
      cstring();  // the statement's name
      return cstring();
    case 'B': {
      cstring();  // the portal
      std::string_view name = cstring();
      return prepared && !name.empty() ? prepared->queryOf(name) : std::string_view();
    }
    default:
      return {};
  }
}

}  // namespace

void Session::choosePool() {
  Pooled& p = *pooled_;
  Pooled::Split& sp = *p.split;
  const auto& m = ctx_.config->mappings[mapping_];
  sql::SplitDecision d;
  std::string_view sql = firstSql(p.up, p.prepared.get());
  if (!sql.empty()) {
    d = sql::classifyForSplit(sql, *m.read_only);
  } else {
    d.reason = "no SQL in the first message";
  }
  sql::Target target = d.target;
  const char* why = d.reason;
  if (!d.hinted && sp.setting != sql::RouteSetting::kAuto) {
    target =
        sp.setting == sql::RouteSetting::kPrimary ? sql::Target::kPrimary : sql::Target::kStandby;
    why = "SET pgproxy.route";
  }
  if (d.sets_route) {
    sp.setting = d.route;  // from the next transaction on; this one runs where it was judged
  }
  // read_write_split: optimistic: a plain BEGIN tries a standby (retried on the primary if the
  // standby refuses a write before a result reaches the client).
  bool trying = m.read_write_optimistic && d.explicit_begin && !d.hinted &&
                sp.setting == sql::RouteSetting::kAuto && target == sql::Target::kPrimary;
  if (trying) {
    target = sql::Target::kStandby;
  }
  std::uint64_t now = base::monotonicMs();
  if (target == sql::Target::kStandby && !d.hinted && sp.setting == sql::RouteSetting::kAuto &&
      m.read_after_write_ms > 0 && sp.last_write_ms > 0 &&
      now - sp.last_write_ms < m.read_after_write_ms) {
    target = sql::Target::kPrimary;
    why = "read_after_write";
  }
  if (p.listen && p.listen->subscribed) {
    target = sql::Target::kPrimary;  // its LISTENs live on the home pool's hub
    why = "LISTEN";
  }
  sp.writes = d.writes && target == sql::Target::kPrimary;
  pool::Pool* to = sp.home;
  if (target == sql::Target::kStandby && p.greeted) {
    auto standby = chooseBackend(config::BackendRole::kStandby, 0);
    std::string error;
    pool::Pool* read =
        standby ? ctx_.pools->get(mapping_, *standby, sp.home->user(), sp.home->database(), error)
                : nullptr;
    if (read) {
      // A standby's pool logs in as the home pool does: with what the last client to log in
      // proved (copied only when it changed, not per transaction).
      if (!(read->credentials() == sp.home->credentials())) {
        read->setCredentials(sp.home->credentials());
      }
      to = read;
    } else {
      why = standby ? "the pool table is full" : "no standby is up (or all are behind)";
    }
  }
  if (trying && to != sp.home) {
    p.endTry();
    sp.tried = Pooled::Split::Try::kOpen;
  }
  if (to != p.pool) {
    p.switchPool(to);
    sp.welcome_seen = to->welcome().size();
  } else if (p.pool->welcome().size() != sp.welcome_seen) {
    p.updateDigest();  // the pool has learnt its welcome since the client came
    sp.welcome_seen = p.pool->welcome().size();
  }
  LOG_DEBUG("session %llu: transaction on %s%s%s", static_cast<unsigned long long>(id_),
            p.pool->describe().c_str(), to == sp.home ? ": " : "", to == sp.home ? why : "");
}

void Pooled::switchPool(pool::Pool* to) {
  if (pool::sameReportedSettable(pool->welcome(), to->welcome())) {
    // The common case (a primary and its standbys): the differences stay as they are, and a
    // transaction's switch allocates nothing.
    pool->addClient(-1);
    to->addClient(1);
    pool = to;
    updateDigest();
    return;
  }
  // The client's parameters are kept as differences from its pool's welcome: rebased, the
  // state the client sees does not change with the server it gets.
  pool::Params absolute = pool->welcome();
  for (const auto& [name, value] : params.entries()) {
    absolute.set(name, value);
  }
  pool::Params rebased;
  for (const auto& [name, value] : absolute.entries()) {
    const std::string* base = to->welcome().get(name);
    if (pool::isReportedSettable(name) && (!base || *base != value)) {
      rebased.set(name, value);
    }
  }
  pool->addClient(-1);
  to->addClient(1);
  pool = to;
  params = std::move(rebased);
  updateDigest();
}

// ---- read_write_split: optimistic ---------------------------------------------------------------
//
// A transaction begun with a plain BEGIN runs on a standby while pgproxy keeps what it needs to
// run it again on the primary: the client's bytes, and each batch's replies until its
// ReadyForQuery (a batch whose error is a standby's refusal to write must not have shown the
// client anything). The first result set the client gets ends that: what it read on the standby
// may differ from the primary, so from then on a refusal is the client's (25006).

bool Pooled::keepTried(std::string_view bytes) {
  Split& sp = *split;
  sp.kept.append(bytes);
  // Run again, these do what they did (the names the Parses gave are forgotten first); a
  // FunctionCall or COPY cannot be followed, nor a DEALLOCATE (the name it took away would be
  // missing the second time).
  bool replayable = sp.kept.size() <= Split::kMaxKept;
  auto replays = [&replayable](char type, std::string_view body) {
    replayable = std::string_view("QPBDECSH").find(type) != std::string_view::npos &&
                 !(type == 'Q' && base::containsIgnoringCase(body, "deallocate"));
    return replayable;
  };
  bool framed = replayable && proto::eachWholeMessage(sp.kept, sp.kept_scanned, replays);
  return (replayable && framed) || closeTry();
}

bool Pooled::closeTry() {
  Split& sp = *split;
  std::string held;
  held.swap(sp.held);
  endTry();
  sp.tried = Split::Try::kClosed;
  return held.empty() || session.writeToClient(held);
}

void Pooled::endTry() {
  Split& sp = *split;
  sp.tried = Split::Try::kNone;
  // Kept for the next transaction, unless a large one grew them.
  constexpr std::size_t kKeepCapacity = 16 << 10;
  for (std::string* buffer : {&sp.kept, &sp.held}) {
    if (buffer->capacity() > kKeepCapacity) {
      std::string().swap(*buffer);
    } else {
      buffer->clear();
    }
  }
  sp.kept_scanned = sp.held_scanned = 0;
  sp.refused = sp.switch_due = false;
  sp.delivered = sp.replayed = sp.dropped = 0;
}

bool Pooled::triedReplies(std::string_view replies, bool more) {
  Split& sp = *split;
  if (sp.tried == Split::Try::kRollingBack) {
    return true;  // the refused batch's ReadyForQuery: the client gets the primary's instead
  }
  sp.held.append(replies);
  if (sp.tried == Split::Try::kReplaying) {
    // The replies to the batches the client already has are dropped, up to the last of their
    // ReadyForQuery; the batch that failed on the standby is the client's.
    bool diverged = sp.held.size() > Split::kMaxKept;
    bool framed =
        proto::eachWholeMessage(sp.held, sp.held_scanned, [&](char type, std::string_view) {
          diverged = diverged || type == 'E' || type == 'T' || type == 'D';
          sp.dropped += type == 'Z' ? 1 : 0;
          return sp.dropped < sp.delivered && !diverged;
        });
    if (diverged || !framed) {
      // What the client was told happened on the standby did not happen on the primary.
      session.sendLastWords(
          Outcome::kError,
          proto::buildFatal("40001",
                            "pgproxy: the transaction, run again on the primary after a standby "
                            "refused a write, went differently there than on the standby"));
      return false;
    }
    if (sp.dropped < sp.delivered) {
      return true;
    }
    std::string rest = sp.held.substr(sp.held_scanned);
    endTry();
    return rest.empty() || session.writeToClient(rest, more);
  }
  // Trying on the standby: each batch's replies wait for its ReadyForQuery, unless a result set
  // ends the try.
  std::size_t batch_end = 0;
  bool result = false;
  bool framed =
      proto::eachWholeMessage(sp.held, sp.held_scanned, [&](char type, std::string_view body) {
        if (type == 'E' &&
            auth::errorField(body, 'C') == proto::sqlstate::kReadOnlySqlTransaction) {
          sp.refused = true;
        } else if (type == 'Z') {
          batch_end = sp.held_scanned;
        } else if (std::string_view("C123ntINS").find(type) == std::string_view::npos &&
                   type != 'E') {
          result = true;  // a result set, COPY, a notification: the client has seen the standby
        }
        return !result;
      });
  if (result || !framed || sp.held.size() > Split::kMaxKept) {
    return closeTry();
  }
  if (batch_end > 0) {
    std::string batch = sp.held.substr(0, batch_end);
    sp.held.erase(0, batch_end);
    sp.held_scanned -= batch_end;
    return session.writeToClient(batch, more || !sp.held.empty());
  }
  return true;
}

bool Pooled::triedReady(char status, bool own, pool::Release& r) {
  Split& sp = *split;
  switch (sp.tried) {
    case Split::Try::kOpen:
      if (own) {
        return false;
      }
      if (sp.refused && status == 'E' && flow.lastOwed() && prepared && server &&
          prepared->waiting() == 0 && up.empty()) {
        // The standby refused a write and the client has seen nothing of this batch: the
        // standby rolls back (and goes back to its pool), the primary runs the transaction.
        if (state) {
          stateReady(status);
        }
        sp.held.clear();
        sp.held_scanned = 0;
        sp.tried = Split::Try::kRollingBack;
        session.holdClientReads(true);  // the client's next bytes are for the primary
        scratch_server.clear();
        prepared->ownQuery("ROLLBACK", scratch_server);
        server->send(scratch_server);
        r = pool::Release::kKeep;
        return true;
      }
      if (sp.refused || status == 'E' || status == 'I') {
        // A refusal that cannot be retried, another error, or the end of the transaction: the
        // batch's replies (before its ReadyForQuery) go to the client now.
        if (!closeTry()) {
          r = pool::Release::kKeep;
          return true;
        }
        if (status == 'I') {
          endTry();
        }
        return false;
      }
      ++sp.delivered;
      return false;
    case Split::Try::kClosed:
      if (!own && status == 'I') {
        endTry();
      }
      return false;
    case Split::Try::kRollingBack:
      if (!own) {
        return false;
      }
      if (status != 'I') {
        session.sendLastWords(
            Outcome::kError,
            proto::buildFatal(proto::sqlstate::kConnectionFailure,
                              "pgproxy: a standby did not roll back a transaction pgproxy moves "
                              "to the primary"));
        r = pool::Release::kKeep;
        return true;
      }
      if (state) {
        state->abandonTransaction();
      }
      server = nullptr;
      session.ctx_.cancels->unlinkPooled(session.cancel_slot_);
      sp.switch_due = true;  // once this ReadyForQuery has passed (fromServer)
      r = pool::Release::kRelease;
      return true;
    case Split::Try::kReplaying:
      if (own || sp.replayed >= sp.delivered) {
        return false;
      }
      // A batch the client already has the answer to: the session state follows the
      // primary, the client is not told.
      ++sp.replayed;
      if (state && server) {
        stateReady(status);
      }
      r = pool::Release::kKeep;
      return true;
    case Split::Try::kNone:
      break;
  }
  return false;
}

void Pooled::retryOnPrimary() {
  Split& sp = *split;
  sp.switch_due = false;
  session.ctx_.metrics.add(metrics::Counter::kSplitRetried);
  LOG_DEBUG("session %llu: a standby refused to write: the transaction runs again on %s",
            static_cast<unsigned long long>(session.id_), sp.home->describe().c_str());
  sp.writes = true;  // read_after_write counts from its end
  switchPool(sp.home);
  sp.welcome_seen = sp.home->welcome().size();
  if (prepared) {
    // The statements the transaction's Parses named are named again as it runs again.
    std::size_t at = 0;
    proto::eachWholeMessage(sp.kept, at, [&](char type, std::string_view body) {
      std::string_view name = body.substr(0, body.find('\0'));
      if (type == 'P' && !name.empty()) {
        prepared->forgetName(name);
      }
      return true;
    });
  }
  up.insert(0, sp.kept);
  sp.kept.clear();
  sp.kept_scanned = 0;
  sp.tried = Split::Try::kReplaying;
  if (sp.delivered == 0) {
    endTry();  // nothing of it reached the client: the primary's replies are all the client's
  }
  pool->acquire(this);
}

// ---- the pool's calls -------------------------------------------------------------------------

void Pooled::granted(pool::ServerConn* s) {
  server = s;
  linking = true;
  std::string sync = digest == s->stateDigest() ? std::string()
                                                : pool::syncQuery(pool->welcome(), params,
                                                                  s->params(), extras, s->extras());
  s->attach(this, sync);
}

void Pooled::refused(std::string error) {
  LOG_INFO("session %llu: no server for %s: %s", static_cast<unsigned long long>(session.id_),
           pool->describe().c_str(),
           auth::errorField(std::string_view(error).substr(5), 'M').c_str());
  session.sendLastWords(Outcome::kBackendUnreachable, std::move(error));
}

void Pooled::linked(std::string error) {
  Session& s = session;
  linking = false;
  relinked = false;
  if (!error.empty()) {
    // The client's parameters do not take on this server (a startup parameter it invented): as
    // PostgreSQL would have refused them at login, the client is refused, and the server, whose
    // query failed cleanly, goes back.
    pool::ServerConn* srv = server;
    server = nullptr;
    srv->detach(true);
    s.sendLastWords(Outcome::kProtocolError, std::move(error));
    return;
  }
  if (server->stateDigest() != digest) {
    server->adoptState(pool->welcome(), params, extras);  // the sync query set it
  }
  s.ctx_.cancels->linkPooled(s.cancel_slot_, server->address(), server->backendPid(),
                             server->backendKey());
  if (!greeted) {
    if (pool->welcome().empty()) {
      pool->setWelcome(server->params());
    }
    s.sendGreeting();
    if (s.state_ != Session::State::kPooled) {
      return;
    }
  }
  if (!up.empty()) {
    std::string pending;
    pending.swap(up);
    if (!toServer(pending)) {
      if (s.state_ == Session::State::kPooled) {
        s.holdClientReads(true);
      }
      return;
    }
    if (s.state_ != Session::State::kPooled) {
      return;
    }
  } else if (flow.quiet() && pool->config().mode != config::PoolMode::kSession) {
    // Linked only for the greeting: nothing to do on this server yet.
    pool::ServerConn* srv = server;
    server = nullptr;
    s.ctx_.cancels->unlinkPooled(s.cancel_slot_);
    srv->detach(true);
  }
  s.holdClientReads(false);
}

bool Pooled::toServer(std::string_view bytes) {
  if (split && split->tried == Split::Try::kOpen && !keepTried(bytes)) {
    return true;  // the session is gone
  }
  if (!prepared) {
    if (pool->config().mode == config::PoolMode::kSession) {
      return server->send(bytes);
    }
    // Made at the client's first message, and dropped when it has nothing left to follow: an
    // idle client costs no tracker.
    prepared = std::make_unique<pool::PreparedTracker>(session.ctx_.pools->statements(),
                                                       pool->config().prepared_statements);
    if (!state) {
      // `extras` holds the StartupMessage's settings until the client changes them.
      state = std::make_unique<pool::SessionState>(extras,
                                                   pool->welcome().get("search_path") != nullptr);
    }
    prepared->setQueryHook(state.get());
  }
  scratch_server.clear();
  scratch_client.clear();
  if (!prepared->fromClient(bytes, server->statements(), scratch_server, scratch_client)) {
    session.refuse(Outcome::kProtocolError, "54000", "pgproxy: " + prepared->fatal());
    return true;
  }
  if (!scratch_client.empty() && !session.writeToClient(scratch_client)) {
    return true;  // the session is gone
  }
  bool room = scratch_server.empty() || server->send(scratch_server);
  return room && prepared->waiting() < kMaxAhead;
}

bool Pooled::fromServer(std::string_view bytes, bool more) {
  if (!prepared) {
    if (!session.writeToClient(bytes, more)) {
      return false;  // the session is gone (detach told the server)
    }
    return session.to_client_.size() < kMaxAhead;
  }
  scratch_server.clear();
  scratch_client.clear();
  if (!prepared->fromServer(bytes, server ? &server->statements() : nullptr, scratch_server,
                            scratch_client)) {
    session.refuse(Outcome::kProtocolError, "54000", "pgproxy: " + prepared->fatal());
    return false;
  }
  if (listenWaiting()) {
    // Until the hub listens: the LISTEN's reply, and any after it, in order.
    listen->held_replies.append(scratch_client);
  } else if (split && split->tried != Split::Try::kNone && split->tried != Split::Try::kClosed) {
    if (!triedReplies(scratch_client, more)) {
      return false;
    }
  } else if (!session.writeToClient(scratch_client, more)) {
    return false;
  }
  if (listen && listen->flush && !more && listen->waits == 0) {
    flushNotifications();  // after the ReadyForQuery that ended the transaction
  }
  if (!server && prepared->idle()) {
    prepared.reset();  // back in its pool with nothing to remember
  }
  if (!scratch_server.empty() && server) {
    // Client messages that waited for this reply.
    bool room = server->send(scratch_server);
    if (reading_held && room && prepared->waiting() < kMaxAhead) {
      session.holdClientReads(false);
    }
  }
  if (after_probe) {
    // The client's next transaction waited for the probe's answer: on the server if the client
    // is still pinned to it, else wherever the split sends it.
    after_probe = false;
    if (!up.empty() && server) {
      std::string pending;
      pending.swap(up);
      if (toServer(pending) && session.state_ == Session::State::kPooled) {
        session.holdClientReads(false);
      }
    } else if (!up.empty() && !waiting) {
      session.choosePool();
      pool->acquire(this);
    } else if (reading_held) {
      session.holdClientReads(false);
    }
    if (session.state_ != Session::State::kPooled) {
      return false;
    }
  }
  if (split && split->switch_due && !server) {
    retryOnPrimary();  // the standby's ROLLBACK has been answered
    if (session.state_ != Session::State::kPooled) {
      return false;
    }
  }
  return session.to_client_.size() + (listen ? listen->held_replies.size() : 0) < kMaxAhead;
}

void Pooled::serverParam(std::string_view name, std::string_view value) {
  const std::string* base = pool->welcome().get(name);
  if (base && *base == value) {
    params.remove(name);
  } else {
    params.set(name, value);
  }
  updateDigest();
}

void Pooled::updateDigest() {
  digest = pool::stateDigest(pool->welcome(), params, extras);
}

pool::Release Pooled::ready(char status) {
  // The ReadyForQuery of pgproxy's own query (the advisory lock probe) is not the client's.
  bool own = prepared && prepared->ownReadyNext();
  if (own && probing) {
    probing = false;
    after_probe = true;  // once this ReadyForQuery has passed (fromServer)
  }
  if (split && split->tried != Split::Try::kNone) {
    pool::Release r = pool::Release::kKeep;
    if (triedReady(status, own, r)) {
      return r;
    }
  }
  if (!own) {
    flow.answered();
    pool::SharedPools& shared = *session.ctx_.shared_pools;
    shared.countQuery(pool->sharedEntry());
    if (status == 'I') {
      shared.countTransaction(pool->sharedEntry());
      if (split && split->writes) {
        split->last_write_ms = base::monotonicMs();  // read_after_write counts from the commit
      }
    }
    if (state && server && prepared) {
      stateReady(status);
      hubChanges();
      if (listen && !listen->unheard_fatal.empty()) {
        // Last: the session may be gone once the words are out.
        session.sendLastWords(Outcome::kError, std::move(listen->unheard_fatal));
        return pool::Release::kKeep;
      }
      if (listen) {
        listen->flush = status == 'I' && !listen->notifications.empty();
      }
      if (const char* probe = state->takeProbe()) {
        // The server stays until its answer has come (ready() again, for the probe's own).
        scratch_server.clear();
        prepared->ownQuery(probe, scratch_server);
        server->send(scratch_server);
        // A split client's next transaction must not follow on this server unless its answer
        // keeps the client pinned: it waits (readPooledClient) for the answer.
        probing = split != nullptr && flow.quiet();
        return pool::Release::kKeep;
      }
    }
  }
  if (state) {
    countPinned();
  }
  pool::Release r = pool::releaseAfterReady(pool->config().mode, status, flow);
  if (after_probe && status == 'I' && pool->config().mode != config::PoolMode::kSession) {
    r = pool::Release::kRelease;  // what the client sent since waits in `up`, not on the server
  }
  if (r == pool::Release::kRelease && *pinned()) {
    r = pool::Release::kKeep;  // until the client releases what holds it, or leaves
  }
  if (r == pool::Release::kKeep) {
    return r;
  }
  server = nullptr;
  session.ctx_.cancels->unlinkPooled(session.cancel_slot_);
  if (r == pool::Release::kStatementInTransaction) {
    session.refuse(Outcome::kProtocolError, proto::sqlstate::kFeatureNotSupported,
                   "transaction blocks are not allowed in statement pooling mode",
                   "Each statement runs on whichever server is free; use transaction or session "
                   "pooling for multi-statement transactions.");
  }
  return r;
}

void Pooled::stateReady(char status) {
  // What the unit that ended did to the session: the client's settings to carry, the server's
  // as they now are (a RESET leaves the server at its default, not the client's).
  pool::Params server_extras = server->extras();
  if (state->ready(status, extras, server_extras)) {
    updateDigest();
    server->setExtras(std::move(server_extras));
  }
}

void Pooled::hubChanges() {
  for (auto& [op, channel] : state->takeHubChanges()) {
    pool::NotifyHub& hub = this->hub();
    if (!listen) {
      listen = std::make_unique<Listen>();
    }
    listen->subscribed = true;
    if (op == '+') {
      // Counted before: the hub may confirm before subscribe returns (it cannot listen, and the
      // client goes on without).
      ++listen->waits;
      listen->in_ready = true;
      if (hub.subscribe(this, channel)) {
        --listen->waits;
      }
      listen->in_ready = false;
    } else if (op == '-') {
      hub.unsubscribe(this, channel);
    } else {
      hub.unsubscribeAll(this);
    }
  }
}

void Pooled::notify(std::string_view message) {
  if (session.to_client_.size() > pool::NotifyHub::kMaxQueued) {
    session.sendLastWords(Outcome::kClientClosedEarly,
                          proto::buildFatal(proto::sqlstate::kOutOfMemory,
                                            "pgproxy: over 1 MiB of notifications waited for "
                                            "this client to read them"));
    return;
  }
  Listen& l = *listen;  // made before it subscribed
  // A client pinned to its server (an advisory lock, a cursor) is between transactions too once
  // all it sent is answered and the server said idle.
  bool between = !server || (flow.quiet() && server->betweenTransactions() &&
                             (!prepared || prepared->pending() == 0));
  if (between && !linking && l.waits == 0) {
    session.writeToClient(message);  // between transactions: at once, as PostgreSQL does
    return;
  }
  if (l.notifications.size() + message.size() > pool::NotifyHub::kMaxQueued) {
    session.sendLastWords(
        Outcome::kError,
        proto::buildFatal(proto::sqlstate::kOutOfMemory,
                          "pgproxy: over 1 MiB of notifications waited for this client's "
                          "transaction to end"));
    return;
  }
  l.notifications.append(message);
}

void Pooled::unheard(std::string fatal) {
  listen->subscribed = false;  // the hub has forgotten it
  if (listen->in_ready) {
    listen->unheard_fatal = std::move(fatal);  // the session must outlive ready()
    return;
  }
  session.sendLastWords(Outcome::kError, std::move(fatal));
}

void Pooled::listening() {
  if (listen->waits > 0) {
    --listen->waits;
  }
  if (listen->waits > 0) {
    return;  // another LISTEN of the client's is not in force yet
  }
  std::string replies;
  replies.swap(listen->held_replies);
  if (!replies.empty() && !session.writeToClient(replies)) {
    return;  // the session is gone
  }
  if (!server) {
    flushNotifications();
  }
}

void Pooled::flushNotifications() {
  listen->flush = false;
  if (!listen->notifications.empty()) {
    std::string out;
    out.swap(listen->notifications);
    session.writeToClient(out);
  }
}

void Pooled::countPinned() {
  bool now = *pinned() != '\0';
  if (now == pinned_counted) {
    return;
  }
  pinned_counted = now;
  session.ctx_.shared_pools->addPinned(pool->sharedEntry(), now ? 1 : -1);
  if (now && split && pool != split->home) {
    // Its next transactions run on this standby whatever they do: their writes fail (25006)
    // until it lets go (read_write_split: optimistic tried a transaction that took it there).
    LOG_WARN(
        "session %llu: keeps its server connection of %s, a standby, between "
        "transactions (%s): its writes fail until it releases it",
        static_cast<unsigned long long>(session.id_), pool->describe().c_str(), pinned());
  } else if (now) {
    LOG_DEBUG("session %llu: keeps its server connection of %s between transactions: %s",
              static_cast<unsigned long long>(session.id_), pool->describe().c_str(), pinned());
  }
}

void Pooled::serverLost(const std::string& why) {
  server = nullptr;
  if (linking && !relinked) {
    // Lost while pgproxy's query gave it the client's state: nothing of the client's has been
    // sent, so another server can serve it as if this one had never been granted. Once only, so
    // that servers that die of the client's state do not pass it around for ever.
    linking = false;
    relinked = true;
    LOG_INFO(
        "session %llu: server connection of %s lost before the link was up (%s): another "
        "one serves",
        static_cast<unsigned long long>(session.id_), pool->describe().c_str(), why.c_str());
    pool->acquire(this);
    return;
  }
  linking = false;
  session.ctx_.cancels->unlinkPooled(session.cancel_slot_);
  LOG_WARN("session %llu: server connection of %s lost: %s",
           static_cast<unsigned long long>(session.id_), pool->describe().c_str(), why.c_str());
  session.sendLastWords(Outcome::kError,
                        proto::buildFatal(proto::sqlstate::kConnectionFailure,
                                          "pgproxy lost the server connection: " + why));
}

bool Pooled::welcomed() {
  if (greeted || !up.empty()) {
    return false;  // it has sent something: it needs a server
  }
  pool->cancelWait(this);
  session.sendGreeting();
  if (session.state_ == Session::State::kPooled) {
    session.holdClientReads(false);
  }
  return true;
}

void Pooled::serverDrained() {
  if (reading_held) {
    session.holdClientReads(false);
  }
}

}  // namespace pgproxy::session
