#include "pgproxy/pool/session_state.h"

#include <strings.h>

#include <algorithm>

#include "pgproxy/pool/notify_hub.h"
#include "pgproxy/proto/wire.h"
#include "pgproxy/sql/statement.h"

namespace pgproxy::pool {
namespace {

using sql::Kind;

bool sameName(std::string_view a, std::string_view b) {
  return a.size() == b.size() && strncasecmp(a.data(), b.data(), a.size()) == 0;
}

// RESET ALL leaves these alone (PostgreSQL marks them GUC_NO_RESET_ALL); DISCARD ALL does not.
bool survivesResetAll(std::string_view name) {
  return sameName(name, "role") || sameName(name, "session_authorization");
}

QueryVerdict refusal(std::string message) {
  QueryVerdict v;
  v.action = QueryVerdict::Action::kRefuse;
  v.reply = proto::buildError(
      proto::sqlstate::kFeatureNotSupported, "pgproxy: " + message,
      "Each transaction of a transaction pool may run on another server connection. Use the "
      "driver's (protocol-level) prepared statements, which pgproxy carries to every server, or "
      "a pool in session mode.");
  return v;
}

}  // namespace

bool SessionState::reported(std::string_view name) const {
  if (sameName(name, "search_path")) {
    return search_path_reported_;
  }
  return isReportedSettable(name);
}

QueryVerdict SessionState::onQuery(std::string_view sql) {
  sql::Split split = sql::split(sql, kMaxStatements);
  QueryVerdict v;
  std::vector<Step> steps;
  // LISTEN / UNLISTEN alone: pgproxy answers, and the pool's hub listens (a LISTEN run on the
  // borrowed server would bring that server's notifications to whichever client has it next).
  bool listen_only = !split.truncated;
  bool any_listen = false;
  for (const sql::Statement& st : split.statements) {
    any_listen |= st.kind == Kind::kListen;
    listen_only &=
        st.kind == Kind::kListen || st.kind == Kind::kUnlisten || st.kind == Kind::kUnlistenAll;
  }
  if (listen_only && any_listen) {
    v.action = QueryVerdict::Action::kAnswer;
    for (const sql::Statement& st : split.statements) {
      if (st.kind == Kind::kListen) {
        if (subscribed_.size() >= kMaxNames) {
          QueryVerdict r;
          r.action = QueryVerdict::Action::kRefuse;
          r.reply = proto::buildError(proto::sqlstate::kOutOfMemory,
                                      "pgproxy follows at most 4096 channels per client");
          return r;
        }
        steps.push_back({Op::kSubscribe, NotifyHub::channelName(st.name), {}, 0});
        v.reply += proto::buildMessage('C', std::string_view("LISTEN\0", 7));
      } else if (st.kind == Kind::kUnlisten) {
        steps.push_back({Op::kUnsubscribe, NotifyHub::channelName(st.name), {}, 0});
        v.reply += proto::buildMessage('C', std::string_view("UNLISTEN\0", 9));
      } else {
        steps.push_back({Op::kUnsubscribeAll, {}, {}, 0});
        v.reply += proto::buildMessage('C', std::string_view("UNLISTEN\0", 9));
      }
    }
    for (Step& s : steps) {
      open_.push_back(std::move(s));
    }
    return v;
  }
  if (split.truncated) {
    steps.push_back({Op::kOpaque, {}, {}, 0});
  }
  for (const sql::Statement& st : split.statements) {
    switch (st.kind) {
      case Kind::kPrepare:
        return refusal("SQL PREPARE of \"" + st.name +
                       "\" cannot be carried across the servers of a transaction pool");
      case Kind::kExecute:
        return refusal("SQL EXECUTE of \"" + st.name +
                       "\" cannot be carried across the servers of a transaction pool");
      case Kind::kDeallocate:
        if (split.statements.size() != 1) {
          return refusal("DEALLOCATE \"" + st.name +
                         "\" must be a query of its own in a transaction pool");
        }
        v.action = QueryVerdict::Action::kDeallocate;
        v.name = st.name;
        return v;
      case Kind::kSet: {
        if (reported(st.name)) {
          break;  // ParameterStatus says what it became
        }
        std::string value;
        if (sql::settingValue(st.value, value)) {
          steps.push_back({Op::kSet, st.name, std::move(value), 0});
        } else {
          steps.push_back({Op::kOpaque, st.name, {}, 0});
        }
        break;
      }
      case Kind::kReset:
        if (!reported(st.name)) {
          steps.push_back({Op::kReset, st.name, {}, 0});
        }
        break;
      case Kind::kResetAll:
        steps.push_back({Op::kResetAll, {}, {}, 0});
        break;
      case Kind::kDiscardAll:
        steps.push_back({Op::kDiscardAll, {}, {}, 0});
        steps.push_back({Op::kUnsubscribeAll, {}, {}, 0});
        break;
      case Kind::kSetOther:
        steps.push_back({Op::kOpaque, {}, {}, 0});
        break;
      case Kind::kCommit:
        steps.push_back({Op::kCommit, {}, {}, 0});
        break;
      case Kind::kRollback:
        steps.push_back({Op::kRollback, {}, {}, 0});
        break;
      case Kind::kSavepoint:
        steps.push_back({Op::kSavepoint, st.name, {}, 0});
        break;
      case Kind::kRollbackTo:
        steps.push_back({Op::kRollbackTo, st.name, {}, 0});
        break;
      case Kind::kRelease:
        steps.push_back({Op::kRelease, st.name, {}, 0});
        break;
      case Kind::kListen:
        steps.push_back({Op::kListen, st.name, {}, 0});
        break;
      case Kind::kUnlisten:
        steps.push_back({Op::kUnlisten, st.name, {}, 0});
        steps.push_back({Op::kUnsubscribe, NotifyHub::channelName(st.name), {}, 0});
        break;
      case Kind::kUnlistenAll:
        steps.push_back({Op::kUnlistenAll, {}, {}, 0});
        steps.push_back({Op::kUnsubscribeAll, {}, {}, 0});
        break;
      case Kind::kDeclareHold:
        steps.push_back({Op::kHold, st.name, {}, 0});
        break;
      case Kind::kClose:
        steps.push_back({Op::kClose, st.name, {}, 0});
        break;
      case Kind::kCloseAll:
        steps.push_back({Op::kCloseAll, {}, {}, 0});
        break;
      case Kind::kCreateTemp:
        steps.push_back({Op::kTemp, {}, {}, 0});
        break;
      case Kind::kDiscardTemp:
        steps.push_back({Op::kDiscardTemp, {}, {}, 0});
        break;
      default:
        break;
    }
    if (st.advisory_locks > 0) {
      steps.push_back({Op::kLock, {}, {}, st.advisory_locks});
    }
    if (st.advisory_unlocks > 0) {
      steps.push_back({Op::kUnlock, {}, {}, st.advisory_unlocks});
    }
    if (st.advisory_unlock_all) {
      steps.push_back({Op::kUnlockAll, {}, {}, 0});
    }
    for (const auto& call : st.config_calls) {
      if (reported(call.name)) {
        continue;  // ParameterStatus says what it became
      }
      steps.push_back({call.value_known ? Op::kSet : Op::kOpaque, call.name, call.value, 0});
    }
    if (st.set_config_opaque) {
      steps.push_back({Op::kOpaque, {}, {}, 0});
    }
  }
  for (Step& s : steps) {
    open_.push_back(std::move(s));
  }
  return v;
}

QueryVerdict SessionState::onParse(std::string_view sql) {
  return onQuery(sql);
}

void SessionState::onUnitEnd() {
  ++units_sent_;
  if (!open_.empty()) {
    sent_.emplace_back(units_sent_, std::move(open_));
    open_.clear();
  }
}

bool SessionState::unit(const std::vector<Step>& steps, bool failed, Params& client,
                        Params& server) {
  bool changed = false;
  auto savepoint = [&](const std::string& name) {
    auto it = std::find_if(savepoints_.rbegin(), savepoints_.rend(),
                           [&](const auto& sp) { return sp.first == name; });
    return it == savepoints_.rend() ? savepoints_.end() : std::prev(it.base());
  };
  for (const Step& s : steps) {
    switch (s.op) {
      // Session advisory locks outlive the transaction, rolled back or not: counted as they go.
      // One taken in a statement that then failed may not be held; pgproxy keeps the pin (it
      // errs on the side of keeping the server).
      case Op::kLock:
        locks_ += s.n;
        advisory_touched_ = true;
        break;
      case Op::kUnlock:
        if (!failed) {
          locks_ = std::max<std::int64_t>(0, locks_ - s.n);
        }
        advisory_touched_ = true;
        break;
      case Op::kUnlockAll:
        if (!failed) {
          locks_ = 0;  // exact: nothing to ask the server unless a lock is taken after it
          advisory_touched_ = false;
        } else {
          advisory_touched_ = true;
        }
        break;
      // COMMIT and ROLLBACK within a Query's statements end the transaction there. In a unit
      // that failed it is not known whether a COMMIT ran before the error: its transaction
      // counts as failed, as the ReadyForQuery's status will say.
      case Op::kCommit:
        if (!failed && !tx_failed_) {
          changed |= commit(client, server);
          endTransaction();
        }
        break;
      case Op::kRollback:
        endTransaction();
        break;
      case Op::kSavepoint:
        savepoints_.emplace_back(s.name, tx_.size());
        break;
      case Op::kRollbackTo:
        if (!failed) {
          auto it = savepoint(s.name);
          if (it != savepoints_.end()) {
            tx_.resize(it->second);
            savepoints_.erase(it + 1, savepoints_.end());
            tx_failed_ = false;  // the transaction goes on
          }
        }
        break;
      case Op::kRelease:
        if (!failed) {
          auto it = savepoint(s.name);
          if (it != savepoints_.end()) {
            savepoints_.erase(it, savepoints_.end());
          }
        }
        break;
      case Op::kDiscardAll:
        if (!failed) {
          locks_ = 0;  // DISCARD ALL unlocks them all, and cannot run in a transaction block
        }
        tx_.push_back(s);
        break;
      default:
        tx_.push_back(s);
        break;
    }
  }
  if (tx_.size() > kMaxTransactionSteps || savepoints_.size() > kMaxTransactionSteps) {
    // A transaction of more changes than pgproxy keeps: what it did is not known, and the client
    // keeps its server if it commits (a rollback undoes it all the same).
    endTransaction();
    tx_.push_back({Op::kOpaque, {}, {}, 0});
  }
  return changed;
}

void SessionState::endTransaction() {
  tx_.clear();
  savepoints_.clear();
  tx_failed_ = false;
}

bool SessionState::ready(char status, Params& client, Params& server) {
  ++units_answered_;
  std::vector<Step> steps;
  if (!sent_.empty() && sent_.front().first == units_answered_) {
    steps = std::move(sent_.front().second);
    sent_.pop_front();
  }
  bool failed = unit_failed_;
  unit_failed_ = false;
  bool changed = unit(steps, failed, client, server);
  if (failed || status == 'E') {
    tx_failed_ = true;
  }
  if (status != 'I') {
    return changed;  // the transaction goes on
  }
  if (!tx_failed_ && !tx_.empty()) {
    changed |= commit(client, server);
  }
  endTransaction();
  if (advisory_touched_) {
    // Between transactions only session-level advisory locks are left: the server counts them.
    advisory_touched_ = false;
    probe_due_ = true;
  }
  return changed;
}

bool SessionState::commit(Params& client, Params& server) {
  bool changed = false;
  auto insert = [&](std::set<std::string>& names, const std::string& name) {
    if (names.size() >= kMaxNames) {
      overflow_ = true;
      return;
    }
    names.insert(name);
  };
  for (const Step& s : tx_) {
    switch (s.op) {
      case Op::kSet:
        client.set(s.name, s.value);
        server.set(s.name, s.value);
        changed = true;
        break;
      case Op::kReset:
        // Back to the session's default: what the StartupMessage set, or the server's own.
        if (const std::string* v = startup_.get(s.name)) {
          client.set(s.name, *v);
        } else {
          client.remove(s.name);
        }
        server.remove(s.name);
        changed = true;
        break;
      case Op::kResetAll: {
        Params c, v;
        for (const auto& [name, value] : client.entries()) {
          if (survivesResetAll(name)) {
            c.set(name, value);
          }
        }
        for (const auto& [name, value] : startup_.entries()) {
          if (!survivesResetAll(name)) {
            c.set(name, value);
          }
        }
        for (const auto& [name, value] : server.entries()) {
          if (survivesResetAll(name)) {
            v.set(name, value);
          }
        }
        client = std::move(c);
        server = std::move(v);
        opaque_ = false;
        changed = true;
        break;
      }
      case Op::kDiscardAll:
        client = startup_;
        server = Params();
        cursors_.clear();
        channels_.clear();
        temp_ = opaque_ = overflow_ = false;
        changed = true;
        break;
      case Op::kHold:
        insert(cursors_, s.name);
        break;
      case Op::kClose:
        cursors_.erase(s.name);
        break;
      case Op::kCloseAll:
        cursors_.clear();
        break;
      case Op::kTemp:
        temp_ = true;
        break;
      case Op::kDiscardTemp:
        temp_ = false;
        break;
      case Op::kListen:
        insert(channels_, s.name);
        break;
      case Op::kUnlisten:
        channels_.erase(s.name);
        break;
      case Op::kUnlistenAll:
        channels_.clear();
        break;
      case Op::kOpaque:
        opaque_ = true;
        break;
      case Op::kSubscribe:
        if (subscribed_.insert(s.name).second) {
          hub_changes_.emplace_back('+', s.name);
        }
        break;
      case Op::kUnsubscribe:
        if (subscribed_.erase(s.name) != 0) {
          hub_changes_.emplace_back('-', s.name);
        }
        break;
      case Op::kUnsubscribeAll:
        if (!subscribed_.empty()) {
          subscribed_.clear();
          hub_changes_.emplace_back('*', std::string());
        }
        break;
      default:
        break;
    }
  }
  return changed;
}

const char* SessionState::takeProbe() {
  if (!probe_due_) {
    return nullptr;
  }
  probe_due_ = false;
  return kLockProbe;
}

void SessionState::onOwnRow(std::string_view value) {
  std::int64_t n = 0;
  for (char c : value) {
    if (c < '0' || c > '9' || n > (std::int64_t{1} << 40)) {
      return;  // not a count: keep what the statements said
    }
    n = n * 10 + (c - '0');
  }
  if (!value.empty()) {
    locks_ = n;
  }
}

const char* SessionState::pinned() const {
  if (locks_ > 0) {
    return "a session advisory lock";
  }
  if (!cursors_.empty()) {
    return "a WITH HOLD cursor";
  }
  if (temp_) {
    return "a temporary table";
  }
  if (!channels_.empty()) {
    return "LISTEN";
  }
  if (opaque_) {
    return "a setting pgproxy cannot carry to another server";
  }
  if (overflow_) {
    return "more cursors or channels than pgproxy follows";
  }
  return "";
}

}  // namespace pgproxy::pool
