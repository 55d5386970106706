#include "pgproxy/pool/prepared.h"

#include <algorithm>
#include <cstring>

#include "pgproxy/proto/wire.h"
#include "pgproxy/sql/statement.h"

namespace pgproxy::pool {

namespace {

constexpr std::string_view kParseComplete("1\0\0\0\4", 5);
constexpr std::string_view kCloseComplete("3\0\0\0\4", 5);
constexpr const char* kAnsweredNotNamed =
    "pgproxy: this statement is answered by pgproxy in a transaction pool and cannot be a named "
    "prepared statement";

std::uint64_t fnv1a(std::string_view s) {
  std::uint64_t h = 14695981039346656037ull;
  for (char c : s) {
    h ^= static_cast<unsigned char>(c);
    h *= 1099511628211ull;
  }
  return h;
}

// The C-string at `at` in `body`; false when it has no terminator.
bool cstring(std::string_view body, std::size_t at, std::string_view& out) {
  if (at > body.size()) {
    return false;
  }
  std::size_t nul = body.find('\0', at);
  if (nul == std::string_view::npos) {
    return false;
  }
  out = body.substr(at, nul - at);
  return true;
}

void appendHeader(std::string& out, char type, std::size_t body) {
  out.push_back(type);
  proto::appendU32(out, static_cast<std::uint32_t>(body + 4));
}

// A Close or Describe of a named statement.
void appendNamed(std::string& out, char type, std::string_view name) {
  appendHeader(out, type, name.size() + 2);
  out.push_back('S');
  out.append(name);
  out.push_back('\0');
}

// One field of an ErrorResponse body.
std::string_view errorField(std::string_view body, char code) {
  std::size_t i = 0;
  while (i < body.size() && body[i] != '\0') {
    char c = body[i++];
    std::size_t nul = body.find('\0', i);
    if (nul == std::string_view::npos) {
      return {};
    }
    if (c == code) {
      return body.substr(i, nul - i);
    }
    i = nul + 1;
  }
  return {};
}

// PostgreSQL's refusal to run a prepared statement whose result type DDL changed.
bool stalePlan(std::string_view error_body) {
  return errorField(error_body, 'C') == "0A000" &&
         errorField(error_body, 'M') == "cached plan must not change result type";
}

std::string quoted(std::string_view name) {
  std::string out = "\"";
  out.append(name.substr(0, 200));
  out += '"';
  return out;
}

}  // namespace

// ---- StatementRegistry ---------------------------------------------------------------------

StatementRegistry::~StatementRegistry() = default;

PreparedStatement* StatementRegistry::intern(std::string_view query, std::string_view types) {
  std::string key;
  key.reserve(query.size() + 1 + types.size());
  key.append(query);
  key.push_back('\0');
  key.append(types);
  auto it = by_key_.find(key);
  if (it != by_key_.end()) {
    ++it->second->refs;
    return it->second.get();
  }
  std::size_t cost = 2 * key.size() + 64;
  if (bytes_ + cost > max_) {
    return nullptr;
  }
  auto s = std::make_unique<PreparedStatement>();
  static constexpr char kHex[] = "0123456789abcdef";
  std::uint64_t h = fnv1a(key);
  std::string name = "pgproxy_";
  for (int shift = 60; shift >= 0; shift -= 4) {
    name.push_back(kHex[(h >> shift) & 0xf]);
  }
  // Two texts with one hash: the later one gets a suffix, so a name never means two texts.
  for (unsigned n = 1; names_.count(name) != 0; ++n) {
    name.resize(24);
    name += "_" + std::to_string(n);
  }
  s->key = std::move(key);
  s->name = std::move(name);
  appendHeader(s->parse, 'P', s->name.size() + 1 + query.size() + 1 + types.size());
  s->parse.append(s->name);
  s->parse.push_back('\0');
  s->parse.append(query);
  s->parse.push_back('\0');
  s->parse.append(types);
  s->refs = 1;
  bytes_ += cost;
  PreparedStatement* raw = s.get();
  names_.insert(raw->name);
  by_key_.emplace(raw->key, std::move(s));
  return raw;
}

void StatementRegistry::unref(PreparedStatement* s) {
  if (--s->refs > 0) {
    return;
  }
  bytes_ -= 2 * s->key.size() + 64;
  names_.erase(s->name);
  by_key_.erase(s->key);  // frees s
}

// ---- ServerStatements ----------------------------------------------------------------------

void ServerStatements::touch(PreparedStatement* s, std::uint64_t batch) {
  auto it = index_.find(s);
  if (it == index_.end()) {
    return;
  }
  lru_.splice(lru_.begin(), lru_, it->second.at);
  it->second.batch = batch;
}

void ServerStatements::add(PreparedStatement* s, std::uint64_t batch) {
  if (index_.count(s) != 0) {
    touch(s, batch);
    return;
  }
  StatementRegistry::ref(s);
  lru_.push_front(s);
  index_.emplace(s, Slot{lru_.begin(), batch});
}

void ServerStatements::remove(PreparedStatement* s) {
  auto it = index_.find(s);
  if (it == index_.end()) {
    return;
  }
  lru_.erase(it->second.at);
  index_.erase(it);
  registry_.unref(s);
}

PreparedStatement* ServerStatements::victim(std::uint64_t batch) const {
  for (auto it = lru_.rbegin(); it != lru_.rend(); ++it) {
    if (index_.at(*it).batch != batch) {
      return *it;
    }
  }
  return nullptr;
}

void ServerStatements::clear() {
  for (PreparedStatement* s : lru_) {
    registry_.unref(s);
  }
  lru_.clear();
  index_.clear();
  to_close_.clear();
}

// ---- PreparedTracker: the client's side ----------------------------------------------------

PreparedTracker::~PreparedTracker() {
  for (auto& [name, s] : names_) {
    registry_.unref(s);
  }
  for (Pending& p : pending_) {
    if (p.stmt) {
      registry_.unref(p.stmt);
    }
  }
}

bool PreparedTracker::fail(std::string why) {
  fatal_ = std::move(why);
  return false;
}

bool PreparedTracker::fromClient(std::string_view bytes, ServerStatements& server,
                                 std::string& to_server, std::string& to_client) {
  keep_from_ = to_server.size();
  bool ok = feed(bytes, server, to_server, to_client);
  if (retry_ == Retry::kKeeping) {
    keepSent(to_server);
  }
  return ok;
}

void PreparedTracker::keepSent(const std::string& to_server) {
  kept_.append(to_server, keep_from_);
  keep_from_ = to_server.size();
  if (kept_.size() > kMaxRetried) {
    forgetKept();
  }
}

void PreparedTracker::forgetKept() {
  retry_ = Retry::kNone;
  if (kept_.capacity() > 4096) {
    std::string().swap(kept_);
  } else {
    kept_.clear();
  }
}

bool PreparedTracker::feed(std::string_view bytes, ServerStatements& server, std::string& to_server,
                           std::string& to_client) {
  if (!fatal_.empty()) {
    return false;
  }
  if (!deferred_.empty()) {
    deferred_.append(bytes);  // behind a message that waits: in order
    return true;
  }
  std::size_t i = 0;
  while (i < bytes.size() || (in_ == In::kHold && left_ == 0)) {
    switch (in_) {
      case In::kHeader: {
        header_[header_have_++] = bytes[i++];
        if (header_have_ < 5) {
          break;
        }
        header_have_ = 0;
        std::uint32_t len = proto::readU32(header_ + 1);
        if (len < 4) {
          return fail("invalid message length");
        }
        left_ = len - 4;
        held_.clear();
        message({}, server, to_server, to_client);
        break;
      }
      case In::kPass:
      case In::kDrop: {
        std::size_t n = std::min<std::size_t>(left_, bytes.size() - i);
        if (in_ == In::kPass) {
          to_server.append(bytes.substr(i, n));
        }
        i += n;
        left_ -= static_cast<std::uint32_t>(n);
        if (left_ == 0) {
          in_ = In::kHeader;
        }
        break;
      }
      case In::kHold: {
        std::size_t n = std::min<std::size_t>(left_, bytes.size() - i);
        if (header_[0] == 'B') {
          // A Bind's parameters may be large: only its two names are held.
          std::size_t nuls = static_cast<std::size_t>(std::count(held_.begin(), held_.end(), '\0'));
          std::string_view chunk = bytes.substr(i, n);
          std::size_t take = 0;
          while (take < chunk.size() && nuls < 2) {
            nuls += chunk[take++] == '\0' ? 1 : 0;
          }
          n = take;
        }
        held_.append(bytes.substr(i, n));
        i += n;
        left_ -= static_cast<std::uint32_t>(n);
        if (held_.size() > kMaxHeld) {
          return fail("a message of over 1 MiB that pgproxy must hold (a named statement)");
        }
        message(held_, server, to_server, to_client);
        break;
      }
    }
    if (!fatal_.empty()) {
      return false;
    }
    if (waiting_) {
      // The message cannot be decided before the server has answered the batches in flight:
      // it and all after it wait, as the client sent them.
      waiting_ = false;
      deferred_.assign(header_, 5);
      deferred_.append(held_);
      deferred_.append(bytes.substr(i));
      in_ = In::kHeader;
      left_ = 0;
      held_.clear();
      return true;
    }
    if (pending_.size() > kMaxPending) {
      return fail("over a million protocol messages in flight");
    }
  }
  return true;
}

bool PreparedTracker::resume(ServerStatements& server, std::string& to_server,
                             std::string& to_client) {
  if (deferred_.empty() || batches_out_ > 0) {
    return true;
  }
  std::string bytes;
  bytes.swap(deferred_);
  return fromClient(bytes, server, to_server, to_client);
}

bool PreparedTracker::mustWait() {
  // What a client's name means depends on how the batches before it end (a Parse that fails, a
  // DEALLOCATE ALL, a statement skipped after an error): with any in flight, wait for them.
  waiting_ = batches_out_ > 0;
  return waiting_;
}

// Called at each complete header (body empty, nothing held yet) and, for a message being held,
// each time more of it has come: decides what the message becomes once enough of it is known.
void PreparedTracker::message(std::string_view body, ServerStatements& server,
                              std::string& to_server, std::string& to_client) {
  char type = header_[0];
  auto passRest = [&]() { in_ = left_ > 0 ? In::kPass : In::kHeader; };
  auto dropRest = [&]() { in_ = left_ > 0 ? In::kDrop : In::kHeader; };
  auto passWhole = [&]() {
    to_server.append(header_, 5);
    to_server.append(body);
    passRest();
  };
  const bool rename = capacity_ > 0;
  if (in_ == In::kHeader) {
    if (retry_ == Retry::kKept) {
      forgetKept();  // more sent behind the batch kept: it could not run again in its place
    }
    switch (type) {
      case 'Q':
      case 'F':
        // A unit of its own: a Bind after it starts a batch afresh (one before it, unsynced,
        // would run again with it: not kept).
        if (retry_ == Retry::kKeeping) {
          forgetKept();
        }
        batch_seen_ = false;
        break;
      case 'E':
      case 'D':
      case 'd':
      case 'c':
      case 'f':
        batch_seen_ = true;
        break;
      default:
        break;
    }
    if (client_skipping_) {
      // pgproxy failed a message of this batch: like PostgreSQL, nothing counts until the Sync.
      if (type != 'S') {
        dropRest();
        return;
      }
      client_skipping_ = false;
    }
    if (!server_skipping_ && !server.toClose().empty()) {
      closeStale(server, to_server);
    }
    switch (type) {
      case 'P':
      case 'B':
      case 'D':
      case 'C':
        if (!rename && !(type == 'P' && hook_)) {
          passWhole();
          push(Pending(type == 'P'   ? Kind::kParse
                       : type == 'B' ? Kind::kBind
                       : type == 'C' ? Kind::kClose
                                     : Kind::kDescribePortal),
               to_client);
          return;
        }
        in_ = In::kHold;
        return;  // the caller goes on with the body
      case 'Q':
        if (hook_ && left_ <= kMaxHeld) {
          in_ = In::kHold;
          return;
        }
        passWhole();
        push(Pending(Kind::kQuery), to_client);
        return;
      case 'S':
        passWhole();
        if (retry_ == Retry::kKeeping && left_ > 0) {
          forgetKept();  // a Sync with a body: PostgreSQL's error, not a batch to run again
        } else if (retry_ == Retry::kKeeping) {
          keepSent(to_server);
          if (retry_ == Retry::kKeeping) {
            retry_ = Retry::kKept;
          }
        }
        batch_seen_ = false;
        push(Pending(Kind::kSync), to_client);
        ++batch_;
        return;
      case 'F':
        passWhole();
        push(Pending(Kind::kQuery), to_client);
        return;
      case 'E': {
        passWhole();
        Pending p(Kind::kExecute);
        if (!unnamed_reply_.empty()) {
          // The unnamed statement is the empty query that stands in for a statement pgproxy
          // answered: its EmptyQueryResponse becomes that statement's CommandComplete.
          p.replace = 'I';
          p.error = unnamed_reply_;
        }
        push(std::move(p), to_client);
        return;
      }
      default:
        passWhole();  // Flush, COPY data: no reply of their own
        return;
    }
  }
  // Holding: is enough of it here?
  switch (type) {
    case 'P': {
      bool unnamed = !body.empty() && body[0] == '\0';
      if (hook_ && (unnamed || !rename)) {
        switch (lookAtParse(body, to_server, to_client)) {
          case Look::kHold:
            return;
          case Look::kDone:
            dropRest();  // what is left of it was answered or refused
            return;
          case Look::kPass:
            break;
        }
      }
      if (unnamed || !rename) {
        unnamed_reply_.clear();
        passWhole();  // the unnamed statement: the server's own, as it is
        push(Pending(Kind::kParse), to_client);
        return;
      }
      if (left_ > 0) {
        return;
      }
      parse(body, server, to_server, to_client);
      return;
    }
    case 'B':
      if (left_ > 0 && std::count(body.begin(), body.end(), '\0') < 2) {
        return;
      }
      if (bindPrefix(server, to_server, to_client)) {
        passRest();
      } else {
        dropRest();
      }
      return;
    case 'Q':
      if (left_ > 0) {
        return;
      }
      query(body, to_server, to_client);
      return;
    default:  // 'D', 'C'
      if (left_ > 0) {
        return;
      }
      describeOrClose(type, body, server, to_server, to_client);
      return;
  }
}

void PreparedTracker::query(std::string_view body, std::string& to_server, std::string& to_client) {
  in_ = In::kHeader;
  std::string_view sql = body.substr(0, body.find('\0'));
  QueryVerdict v = hook_->onQuery(sql);
  if (v.action == QueryVerdict::Action::kDeallocate) {
    deallocate(v);
  }
  if (v.action == QueryVerdict::Action::kForward) {
    to_server.append(header_, 5);
    to_server.append(body);
    push(Pending(Kind::kQuery), to_client);
    return;
  }
  // In its place: an empty query (EmptyQueryResponse, then ReadyForQuery), or one that fails in
  // any transaction state (a syntax error is found before the transaction's state is looked at),
  // so that a refusal fails the client's transaction as PostgreSQL's own error would.
  bool answer = v.action == QueryVerdict::Action::kAnswer;
  std::string_view stand_in =
      answer ? std::string_view("\0", 1) : std::string_view("pgproxy refused this query\0", 27);
  appendHeader(to_server, 'Q', stand_in.size());
  to_server.append(stand_in);
  Pending p(Kind::kQuery, nullptr, {}, std::move(v.reply));
  p.replace = answer ? 'I' : 'E';
  push(std::move(p), to_client);
}

void PreparedTracker::parse(std::string_view body, ServerStatements& server, std::string& to_server,
                            std::string& to_client) {
  std::string_view name, query;
  bool ok = cstring(body, 0, name) && cstring(body, name.size() + 1, query);
  std::size_t types_at = name.size() + 1 + query.size() + 1;
  std::string_view types = ok ? body.substr(types_at) : std::string_view();
  if (ok) {
    ok = types.size() >= 2 &&
         types.size() == 2 + 4 * std::size_t{static_cast<std::uint16_t>(
                                     (static_cast<unsigned char>(types[0]) << 8) |
                                     static_cast<unsigned char>(types[1]))};
  }
  in_ = In::kHeader;
  if (!ok) {
    // Malformed: the server says so, as it would have.
    to_server.append(header_, 5);
    to_server.append(body);
    push(Pending(Kind::kParse), to_client);
    return;
  }
  if (server_skipping_) {
    return;  // the server would ignore it: so does pgproxy
  }
  if (mustWait()) {
    return;
  }
  if (hook_) {
    QueryVerdict v = hook_->onParse(query);
    if (v.action == QueryVerdict::Action::kAnswer) {
      refuse(proto::sqlstate::kFeatureNotSupported, kAnsweredNotNamed, to_client);
      return;
    }
    if (v.action == QueryVerdict::Action::kRefuse) {
      refuseWith(std::move(v.reply), to_client);
      return;
    }
  }
  unnamed_reply_.clear();
  if (names_.size() >= kMaxNames) {
    refuse(proto::sqlstate::kOutOfMemory,
           "pgproxy keeps at most 65536 prepared statements per client", to_client);
    return;
  }
  if (names_.count(std::string(name)) != 0) {
    refuse(proto::sqlstate::kDuplicatePreparedStatement,
           "prepared statement " + quoted(name) + " already exists", to_client);
    return;
  }
  PreparedStatement* s = registry_.intern(query, types);
  if (!s) {
    refuse(proto::sqlstate::kOutOfMemory,
           "pgproxy's memory for prepared statements is full (64 MiB per worker)", to_client);
    return;
  }
  names_.emplace(std::string(name), s);  // the reference intern took
  StatementRegistry::ref(s);             // the reply's
  if (server.has(s) && tx_status_ == 'E' && !endsTransaction(query)) {
    // In a failed transaction PostgreSQL refuses the Parse (25P02): the server says so, and the
    // client's name goes again with its error. The server's copy stays. (A COMMIT or ROLLBACK
    // it parses: pgjdbc prepares its ROLLBACK, and sends it in the failed transaction.)
    server.touch(s, batch_);
    to_server.append(s->parse);
    push({Kind::kParse, s, std::string(name), {}, false}, to_client);
    return;
  }
  if (server.has(s)) {
    server.touch(s, batch_);
    push({Kind::kMadeParse, s, std::string(name), {}}, to_client);
    return;
  }
  makeRoom(server, to_server);
  to_server.append(s->parse);
  server.add(s, batch_);
  push({Kind::kParse, s, std::string(name), {}, true}, to_client);
}

PreparedStatement* PreparedTracker::use(std::string_view name, ServerStatements& server,
                                        std::string& to_server, std::string& to_client) {
  auto it = names_.find(std::string(name));
  if (it == names_.end()) {
    refuse(proto::sqlstate::kInvalidSqlStatementName,
           "prepared statement " + quoted(name) + " does not exist", to_client);
    return nullptr;
  }
  PreparedStatement* s = it->second;
  if (server_skipping_) {
    return s;  // ignored by the server whatever it says
  }
  if (server.has(s)) {
    server.touch(s, batch_);
    return s;
  }
  makeRoom(server, to_server);
  to_server.append(s->parse);
  server.add(s, batch_);
  StatementRegistry::ref(s);
  push({Kind::kOwnParse, s, {}, {}}, to_client);
  return s;
}

bool PreparedTracker::bindPrefix(ServerStatements& server, std::string& to_server,
                                 std::string& to_client) {
  std::string_view held(held_);
  std::string_view portal, name;
  if (!cstring(held, 0, portal) || !cstring(held, portal.size() + 1, name) || name.empty()) {
    batch_seen_ = true;
    to_server.append(header_, 5);
    to_server.append(held);
    push(Pending(Kind::kBind), to_client);
    return true;
  }
  if (mustWait()) {
    return true;
  }
  PreparedStatement* s = use(name, server, to_server, to_client);
  if (!s) {
    return false;
  }
  std::uint32_t len = proto::readU32(header_ + 1);
  std::size_t body = len - 4 - name.size() + s->name.size();
  if (body > 0x7fffffffu) {
    fail("a Bind message too long to rename");
    return false;
  }
  Pending p(Kind::kBind, s);
  if (!batch_seen_ && tx_status_ == 'I' && retry_ == Retry::kNone && !server_skipping_ &&
      body <= kMaxRetried) {
    // Nothing of this batch has run or been described yet (named Binds wait for the batches
    // before them, so the status is its own): it can run again if the plan proves stale.
    retry_ = Retry::kKeeping;
    keep_from_ = to_server.size();
    p.retry = true;
  }
  batch_seen_ = true;
  appendHeader(to_server, 'B', body);
  to_server.append(portal);
  to_server.push_back('\0');
  to_server.append(s->name);
  to_server.push_back('\0');
  to_server.append(held.substr(portal.size() + name.size() + 2));
  StatementRegistry::ref(s);
  push(std::move(p), to_client);
  return true;
}

void PreparedTracker::describeOrClose(char type, std::string_view body, ServerStatements& server,
                                      std::string& to_server, std::string& to_client) {
  in_ = In::kHeader;
  std::string_view name;
  bool named = body.size() >= 2 && body[0] == 'S' && cstring(body, 1, name) && !name.empty();
  Kind kind = type == 'C'                      ? Kind::kClose
              : body.empty() || body[0] != 'S' ? Kind::kDescribePortal
                                               : Kind::kDescribeStatement;
  if (!named) {
    to_server.append(header_, 5);
    to_server.append(body);
    push({kind}, to_client);
    return;
  }
  if (mustWait()) {
    return;
  }
  if (type == 'D') {
    PreparedStatement* s = use(name, server, to_server, to_client);
    if (!s) {
      return;
    }
    appendNamed(to_server, 'D', s->name);
    push({kind}, to_client);
    return;
  }
  // Close: answered here; the server's copy stays for other clients until it is evicted.
  if (server_skipping_) {
    return;
  }
  Pending p(Kind::kMadeClose, nullptr, std::string(name));
  auto it = names_.find(p.client_name);
  if (it != names_.end()) {
    p.stmt = it->second;  // the name's reference moves to the reply, for an undo
    names_.erase(it);
  }
  push(std::move(p), to_client);
}

void PreparedTracker::closeStale(ServerStatements& server, std::string& to_server) {
  std::vector<std::string> names;
  names.swap(server.toClose());
  for (std::string& n : names) {
    appendNamed(to_server, 'C', n);
    pending_.push_back({Kind::kOwnClose, nullptr, std::move(n), {}});
  }
}

void PreparedTracker::makeRoom(ServerStatements& server, std::string& to_server) {
  while (server.size() >= capacity_) {
    PreparedStatement* v = server.victim(batch_);
    if (!v) {
      return;  // every one is used by this batch: over capacity until it ends
    }
    appendNamed(to_server, 'C', v->name);
    pending_.push_back({Kind::kOwnClose, nullptr, v->name, {}});
    server.remove(v);
  }
}

void PreparedTracker::ownQuery(std::string_view sql, std::string& to_server) {
  appendHeader(to_server, 'Q', sql.size() + 1);
  to_server.append(sql);
  to_server.push_back('\0');
  // Not a batch of the client's: named messages need not wait for it.
  pending_.push_back(Pending(Kind::kOwnQuery));
}

void PreparedTracker::ownRow() {
  s_own_row_ = false;
  pending_.front().created = true;  // its first row is the one that counts
  // DataRow: a column count, then each column's length (-1: NULL) and bytes.
  std::string_view row(s_held_);
  if (!hook_ || row.size() < 6 || (row[0] == 0 && row[1] == 0)) {
    return;
  }
  std::int32_t len = static_cast<std::int32_t>(proto::readU32(row.data() + 2));
  if (len < 0 || static_cast<std::size_t>(len) > row.size() - 6) {
    return;
  }
  hook_->onOwnRow(row.substr(6, static_cast<std::size_t>(len)));
}

bool PreparedTracker::endsTransaction(std::string_view query) {
  // What PostgreSQL accepts in a failed transaction (IsTransactionExitStmt).
  sql::Split split = sql::split(query, 1);
  if (split.statements.empty()) {
    return false;
  }
  sql::Kind k = split.statements[0].kind;
  return k == sql::Kind::kCommit || k == sql::Kind::kRollback || k == sql::Kind::kRollbackTo;
}

void PreparedTracker::refuse(std::string sqlstate, std::string message, std::string& to_client) {
  refuseWith(proto::buildError(sqlstate, message), to_client);
}

void PreparedTracker::refuseWith(std::string error, std::string& to_client) {
  if (hook_) {
    hook_->onError();  // the client's unit failed: what the hook saw of it did not happen
  }
  client_skipping_ = true;
  push({Kind::kMadeError, nullptr, {}, std::move(error)}, to_client);
}

void PreparedTracker::deallocate(QueryVerdict& v) {
  // Without renaming, the client's names are the server's: DEALLOCATE is the server's to run.
  // In a failed transaction PostgreSQL refuses it (25P02): the server says so.
  if (capacity_ == 0 || tx_status_ == 'E') {
    v.action = QueryVerdict::Action::kForward;
    return;
  }
  auto it = names_.find(v.name);
  if (it == names_.end()) {
    v.action = QueryVerdict::Action::kRefuse;
    v.reply = proto::buildError(proto::sqlstate::kInvalidSqlStatementName,
                                "prepared statement " + quoted(v.name) + " does not exist");
    return;
  }
  // The server's copy is shared by every client that prepared the same text: it stays.
  registry_.unref(it->second);
  names_.erase(it);
  v.action = QueryVerdict::Action::kAnswer;
  v.reply = proto::buildMessage('C', std::string_view("DEALLOCATE\0", 11));
}

void PreparedTracker::forgetName(std::string_view name) {
  auto it = names_.find(std::string(name));
  if (it != names_.end()) {
    registry_.unref(it->second);
    names_.erase(it);
  }
}

PreparedTracker::Look PreparedTracker::lookAtParse(std::string_view body, std::string& to_server,
                                                   std::string& to_client) {
  if (left_ > 0) {
    // Until it is whole; one too long to hold goes on unseen.
    return body.size() < kMaxLooked ? Look::kHold : Look::kPass;
  }
  std::size_t name_end = body.find('\0');
  std::size_t query_end =
      name_end == std::string_view::npos ? name_end : body.find('\0', name_end + 1);
  if (query_end == std::string_view::npos || server_skipping_) {
    return Look::kPass;  // malformed (the server says so), or ignored by the server
  }
  std::string_view query = body.substr(name_end + 1, query_end - name_end - 1);
  QueryVerdict v = hook_->onParse(query);
  if (v.action == QueryVerdict::Action::kDeallocate) {
    if (name_end != 0) {
      return Look::kPass;
    }
    deallocate(v);
  }
  if (v.action == QueryVerdict::Action::kAnswer && name_end != 0) {
    v.action = QueryVerdict::Action::kRefuse;
    v.reply = proto::buildError(proto::sqlstate::kFeatureNotSupported, kAnsweredNotNamed);
  }
  switch (v.action) {
    case QueryVerdict::Action::kRefuse:
      refuseWith(std::move(v.reply), to_client);
      return Look::kDone;
    case QueryVerdict::Action::kAnswer:
      break;
    default:
      return Look::kPass;
  }
  // The unnamed statement becomes the empty query: Bind, Describe and Execute get the replies
  // the answered statement's would have (Execute's EmptyQueryResponse is replaced).
  std::string_view types = body.substr(query_end + 1);
  appendHeader(to_server, 'P', 2 + types.size());
  to_server.append("\0\0", 2);
  to_server.append(types);
  push(Pending(Kind::kParse), to_client);
  unnamed_reply_ = std::move(v.reply);
  return Look::kDone;
}

void PreparedTracker::push(Pending p, std::string& to_client) {
  if (server_skipping_ && p.kind != Kind::kSync) {
    drop(p, nullptr);  // the server ignores it, and whatever pgproxy would have said for it
    return;
  }
  if (p.kind == Kind::kSync) {
    server_skipping_ = false;
  }
  if (p.kind == Kind::kSync || p.kind == Kind::kQuery) {
    ++batches_out_;
    if (hook_) {
      hook_->onUnitEnd();
    }
  }
  pending_.push_back(std::move(p));
  made(to_client);
}

void PreparedTracker::made(std::string& to_client) {
  while (!pending_.empty()) {
    Pending& p = pending_.front();
    if (p.kind == Kind::kMadeParse) {
      to_client.append(kParseComplete);
    } else if (p.kind == Kind::kMadeClose) {
      to_client.append(kCloseComplete);
    } else if (p.kind == Kind::kMadeError) {
      to_client.append(p.error);
      // Like the server after an error: what the client sent up to its Sync gets no reply.
      if (p.stmt) {
        registry_.unref(p.stmt);
      }
      popPending();
      dropToSync(nullptr);
      continue;
    } else {
      return;
    }
    popFront();
  }
}

void PreparedTracker::drop(Pending& p, ServerStatements* server) {
  switch (p.kind) {
    case Kind::kParse:
    case Kind::kMadeParse:
      if (p.stmt && server && p.created) {
        server->remove(p.stmt);
      }
      if (!p.client_name.empty()) {
        auto it = names_.find(p.client_name);
        if (it != names_.end() && it->second == p.stmt) {
          registry_.unref(it->second);
          names_.erase(it);
        }
      }
      break;
    case Kind::kOwnParse:
      if (server) {
        server->remove(p.stmt);
      }
      break;
    case Kind::kOwnClose:
      if (server) {
        server->toClose().push_back(std::move(p.client_name));
      }
      break;
    case Kind::kMadeClose:
      if (p.stmt) {
        auto [it, fresh] = names_.try_emplace(p.client_name, p.stmt);
        if (!fresh) {
          registry_.unref(it->second);
          it->second = p.stmt;
        }
        p.stmt = nullptr;  // its reference is the name's again
      }
      break;
    default:
      break;
  }
  if (p.stmt) {
    registry_.unref(p.stmt);
    p.stmt = nullptr;
  }
}

void PreparedTracker::dropToSync(ServerStatements* server) {
  while (!pending_.empty() && pending_.front().kind != Kind::kSync) {
    drop(pending_.front(), server);
    popPending();
  }
  if (pending_.empty()) {
    server_skipping_ = true;
  }
}

void PreparedTracker::popFront() {
  Pending& p = pending_.front();
  if (p.stmt) {
    registry_.unref(p.stmt);
  }
  popPending();
}

void PreparedTracker::popPending() {
  Kind k = pending_.front().kind;
  if (k == Kind::kSync || k == Kind::kQuery) {
    --batches_out_;
  }
  pending_.pop_front();
}

// ---- PreparedTracker: the server's side ----------------------------------------------------

bool PreparedTracker::fromServer(std::string_view bytes, ServerStatements* server,
                                 std::string& to_server, std::string& to_client) {
  std::size_t i = 0;
  while (i < bytes.size()) {
    if (!s_in_body_) {
      s_header_[s_header_have_++] = bytes[i++];
      if (s_header_have_ < 5) {
        continue;
      }
      s_header_have_ = 0;
      std::uint32_t len = proto::readU32(s_header_ + 1);
      s_left_ = len >= 4 ? len - 4 : 0;
      s_in_body_ = true;
      s_held_.clear();
      made(to_client);
      char type = s_header_[0];
      s_drop_ = false;
      if (!pending_.empty()) {
        Kind k = pending_.front().kind;
        if ((k == Kind::kOwnParse && type == '1') || (k == Kind::kOwnClose && type == '3')) {
          s_drop_ = true;  // the reply to pgproxy's own message
          popFront();
        } else if (k == Kind::kOwnQuery) {
          s_drop_ = true;
          s_own_row_ = type == 'D' && !pending_.front().created;
          if (type == 'Z') {
            popFront();
          }
        } else if (k == Kind::kRetry) {
          if (type == 'Z') {
            s_drop_ = true;  // the failed try's; notices and reports before it are the client's
            popFront();
          }
        } else if (k == Kind::kBind && type == 'E' && retry_ == Retry::kKept && server &&
                   pending_.front().retry) {
          s_hold_ = true;  // until it is known whether it is a stale plan's
        } else if ((k == Kind::kQuery || k == Kind::kExecute) && pending_.front().replace == type) {
          s_drop_ = true;  // the stand-in's reply: pgproxy's takes its place
          pending_.front().replace = 0;
          to_client.append(pending_.front().error);
          if (k == Kind::kExecute) {
            popFront();  // its whole reply
          }
        }
      }
      if (!s_drop_ && !s_hold_) {
        to_client.append(s_header_, 5);
      }
    }
    std::size_t n = std::min<std::size_t>(s_left_, bytes.size() - i);
    std::string_view chunk = bytes.substr(i, n);
    if (s_own_row_ && s_held_.size() < 1024) {
      s_held_.append(chunk.substr(0, 1024 - s_held_.size()));
    }
    if (s_hold_) {
      s_held_.append(chunk);
      if (s_held_.size() > 8192) {
        s_hold_ = false;  // no error of PostgreSQL's about a plan is this long: the client's
        to_client.append(s_header_, 5);
        to_client.append(s_held_);
      }
    } else if (!s_drop_) {
      to_client.append(chunk);
      char type = s_header_[0];
      if ((type == 'E' || type == 'C' || type == 'Z') && s_held_.size() < 1024) {
        s_held_.append(chunk.substr(0, 1024 - s_held_.size()));
      }
    }
    i += n;
    s_left_ -= static_cast<std::uint32_t>(n);
    if (s_left_ == 0) {
      s_in_body_ = false;
      if (s_hold_) {
        s_hold_ = false;
        if (!retryStale(server, to_server)) {
          to_client.append(s_header_, 5);
          to_client.append(s_held_);
          serverMessageEnd(server);
        }
      } else if (!s_drop_) {
        serverMessageEnd(server);
      } else if (s_own_row_) {
        ownRow();
      }
      made(to_client);
    }
  }
  return server == nullptr || resume(*server, to_server, to_client);
}

bool PreparedTracker::retryStale(ServerStatements* server, std::string& to_server) {
  if (!stalePlan(s_held_)) {
    return false;
  }
  // The batch kept must be the only one in flight, with nothing of pgproxy's own behind it:
  // sent again now, its replies come where the client expects them.
  if (retry_ != Retry::kKept || batches_out_ != 1 || pending_.back().kind != Kind::kSync) {
    return false;
  }
  for (const Pending& p : pending_) {
    if (p.kind == Kind::kOwnQuery || p.kind == Kind::kMadeError) {
      return false;
    }
  }
  Pending& bind = pending_.front();
  PreparedStatement* s = bind.stmt;
  bind.retry = false;  // once: a second failure is the client's
  // The failed try's ReadyForQuery, then the statement prepared afresh, then the batch again.
  appendNamed(to_server, 'C', s->name);
  to_server.append(s->parse);
  to_server.append(kept_);
  forgetKept();
  server->touch(s, batch_);
  StatementRegistry::ref(s);
  pending_.push_front(Pending(Kind::kOwnParse, s));
  pending_.push_front(Pending(Kind::kOwnClose, nullptr, s->name));
  pending_.push_front(Pending(Kind::kRetry));
  return true;
}

void PreparedTracker::serverMessageEnd(ServerStatements* server) {
  char type = s_header_[0];
  Kind front = pending_.empty() ? Kind::kSync : pending_.front().kind;
  bool any = !pending_.empty();
  switch (type) {
    case '1':
      if (any && front == Kind::kParse) {
        popFront();
      }
      return;
    case '2':
      if (any && front == Kind::kBind) {
        popFront();
      }
      return;
    case 'T':
    case 'n':
      if (any && (front == Kind::kDescribeStatement || front == Kind::kDescribePortal)) {
        popFront();
      }
      return;
    case 'C':
    case 'I':
    case 's':
      if (type == 'C') {
        std::string_view tag(s_held_);
        tag = tag.substr(0, tag.find('\0'));
        if (tag == "DISCARD ALL" || tag == "DEALLOCATE ALL") {
          // Every statement of the server is gone, and (as on a server of its own) the
          // client's.
          if (server) {
            server->clear();
          }
          for (auto& [name, s] : names_) {
            registry_.unref(s);
          }
          names_.clear();
        }
      }
      if (any && front == Kind::kExecute) {
        popFront();
      }
      return;
    case '3':
      if (any && front == Kind::kClose) {
        popFront();
      }
      return;
    case 'Z':
      if (!s_held_.empty()) {
        tx_status_ = s_held_[0];
      }
      while (!pending_.empty()) {
        Kind k = pending_.front().kind;
        if (k == Kind::kSync || k == Kind::kQuery) {
          popFront();
          break;
        }
        drop(pending_.front(), server);
        popPending();
      }
      if (retry_ == Retry::kKept && batches_out_ == 0) {
        forgetKept();  // answered
      }
      return;
    case 'E': {
      if (hook_) {
        hook_->onError();
      }
      if (!any || front == Kind::kQuery || front == Kind::kSync) {
        return;  // within a simple Query, or at the Sync: the ReadyForQuery follows
      }
      Pending& p = pending_.front();
      if (p.kind == Kind::kBind && p.stmt && server && stalePlan(s_held_)) {
        // The statement's result changed under it (DDL): this client sees the error once, and
        // the server's copy is replaced on its next use instead of failing for ever.
        server->remove(p.stmt);
        server->toClose().push_back(p.stmt->name);
      }
      drop(p, server);
      popPending();
      dropToSync(server);
      return;
    }
    default:
      return;  // rows, notices, notifications, parameter reports, COPY: no change
  }
}

}  // namespace pgproxy::pool
