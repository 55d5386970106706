#include "pgproxy/pool/notify_hub.h"

#include <algorithm>

#include "pgproxy/log/log.h"
#include "pgproxy/pool/server_conn.h"
#include "pgproxy/proto/wire.h"
#include "pgproxy/sql/statement.h"

namespace pgproxy::pool {

std::string NotifyHub::channelName(std::string_view name) {
  // PostgreSQL truncates identifiers to NAMEDATALEN - 1 bytes, at a character boundary.
  constexpr std::size_t kMax = 63;
  if (name.size() <= kMax) {
    return std::string(name);
  }
  std::size_t n = kMax;
  while (n > 0 && (static_cast<unsigned char>(name[n]) & 0xc0) == 0x80) {
    --n;  // not inside a UTF-8 character
  }
  return std::string(name.substr(0, n));
}

NotifyHub::~NotifyHub() {
  if (starting_) {
    pool_.cancelDedicated(this);  // closed once up
  }
  drop("LISTEN");
}

void NotifyHub::drop(const char* why) {
  if (server_) {
    ServerConn* s = server_;
    server_ = nullptr;
    s->detach(false, why);
  }
}

void NotifyHub::start() {
  // Before the call: a connection that fails at once calls refused() before it returns.
  starting_ = true;
  if (!pool_.startDedicated(this)) {
    starting_ = false;
    const char* why =
        "no server connection can be opened to LISTEN on (max_db_connections reached, or the "
        "backend failed a moment ago)";
    LOG_WARN("pool %s: %s", pool_.describe().c_str(), why);
    failAll(
        proto::buildFatal(proto::sqlstate::kTooManyConnections, std::string("pgproxy: ") + why));
  }
}

bool NotifyHub::subscribe(Subscriber* s, const std::string& channel) {
  channels_[channel].insert(s);
  if (listened_.count(channel) != 0 && in_flight_.empty()) {
    return true;
  }
  if (server_ && !linking_) {
    listenAll();
    if (in_flight_.empty()) {
      return true;
    }
    in_flight_.back().push_back(s);
    return false;
  }
  unsent_.push_back(s);
  if (!server_ && !starting_) {
    start();
  }
  return false;
}

void NotifyHub::unsubscribe(Subscriber* s, const std::string& channel) {
  auto it = channels_.find(channel);
  if (it == channels_.end() || it->second.erase(s) == 0 || !it->second.empty()) {
    return;
  }
  channels_.erase(it);
  if (listened_.erase(channel) != 0 && server_ && !linking_) {
    send("UNLISTEN " + sql::quoteIdentifier(channel), {});
  }
}

void NotifyHub::unsubscribeAll(Subscriber* s) {
  std::vector<std::string> mine;
  for (const auto& [channel, subscribers] : channels_) {
    if (subscribers.count(s) != 0) {
      mine.push_back(channel);
    }
  }
  for (const std::string& channel : mine) {
    unsubscribe(s, channel);
  }
  auto forget = [s](std::vector<Subscriber*>& v) {
    v.erase(std::remove(v.begin(), v.end(), s), v.end());
  };
  forget(unsent_);
  forget(confirming_);
  for (auto& v : in_flight_) {
    forget(v);
  }
}

void NotifyHub::send(const std::string& sql, std::vector<Subscriber*> waiters) {
  in_flight_.push_back(std::move(waiters));
  server_->send(proto::buildMessage('Q', sql + '\0'));
}

void NotifyHub::listenAll() {
  std::string sql;
  for (const auto& [channel, subscribers] : channels_) {
    if (listened_.insert(channel).second) {
      sql += sql.empty() ? "" : "; ";
      sql += "LISTEN " + sql::quoteIdentifier(channel);
    }
  }
  std::vector<Subscriber*> waiters;
  waiters.swap(unsent_);
  if (!sql.empty()) {
    send(sql, std::move(waiters));
  } else if (!in_flight_.empty()) {
    // Listened on already, by a query still in flight: confirmed with it.
    auto& last = in_flight_.back();
    last.insert(last.end(), waiters.begin(), waiters.end());
  } else {
    confirm(waiters);
  }
}

void NotifyHub::confirm(std::vector<Subscriber*>& waiters) {
  // A member list, not a copy: a subscriber whose client goes away in listening() (its write
  // failed) leaves it through unsubscribeAll before its turn. Once per subscribe() that returned
  // false.
  confirming_.insert(confirming_.end(), waiters.begin(), waiters.end());
  waiters.clear();
  while (!confirming_.empty()) {
    Subscriber* s = confirming_.front();
    confirming_.erase(confirming_.begin());
    s->listening();
  }
}

void NotifyHub::granted(ServerConn* s) {
  starting_ = false;
  server_ = s;
  linking_ = true;
  s->attach(this, syncQuery(pool_.welcome(), Params(), s->params(), Params(), s->extras()));
}

void NotifyHub::refused(std::string error) {
  starting_ = false;
  std::string why = auth::errorField(std::string_view(error).substr(5), 'M');
  LOG_WARN("pool %s: no server connection to LISTEN on: %s", pool_.describe().c_str(), why.c_str());
  failAll(proto::buildFatal(proto::sqlstate::kConnectionFailure,
                            "pgproxy could not open a connection to LISTEN on: " + why));
}

void NotifyHub::failAll(const std::string& fatal) {
  std::set<Subscriber*> all;
  for (const auto& [channel, subscribers] : channels_) {
    all.insert(subscribers.begin(), subscribers.end());
  }
  all.insert(unsent_.begin(), unsent_.end());
  all.insert(confirming_.begin(), confirming_.end());
  for (const auto& v : in_flight_) {
    all.insert(v.begin(), v.end());
  }
  channels_.clear();
  listened_.clear();
  unsent_.clear();
  confirming_.clear();
  in_flight_.clear();
  drop("its listeners are gone");
  // Each was removed above: one whose client ends now finds nothing of its own to leave.
  for (Subscriber* s : all) {
    s->unheard(fatal);
  }
}

void NotifyHub::linked(std::string error) {
  linking_ = false;
  if (!error.empty()) {
    drop("its state could not be set");
    refused(std::move(error));
    return;
  }
  server_->adoptState(pool_.welcome(), Params(), Params());
  buffer_.clear();
  listened_.clear();
  listenAll();
  if (channels_.empty() && in_flight_.empty()) {
    // Everyone left while the server was on its way: back it goes, at its first ReadyForQuery.
    send("SELECT 1", {});
  }
}

bool NotifyHub::fromServer(std::string_view bytes, bool) {
  buffer_.append(bytes);
  std::size_t at = 0;
  while (buffer_.size() - at >= 5) {
    std::uint32_t len = proto::readU32(buffer_.data() + at + 1);
    if (len < 4 || buffer_.size() - at - 1 < len) {
      break;
    }
    message(buffer_[at], std::string_view(buffer_).substr(at, 1 + len));
    at += 1 + len;
  }
  buffer_.erase(0, at);
  return true;
}

void NotifyHub::message(char type, std::string_view whole) {
  std::string_view body = whole.substr(5);
  if (type == 'A' && body.size() > 4) {
    std::string_view rest = body.substr(4);
    std::string channel(rest.substr(0, rest.find('\0')));
    auto it = channels_.find(channel);
    if (it == channels_.end()) {
      return;  // nobody listens any more (its UNLISTEN is on its way)
    }
    // A copy: a subscriber may leave (its client write fails) while this runs.
    std::vector<Subscriber*> to(it->second.begin(), it->second.end());
    for (Subscriber* s : to) {
      auto again = channels_.find(channel);
      if (again != channels_.end() && again->second.count(s) != 0) {
        s->notify(whole);
      }
    }
  } else if (type == 'E') {
    LOG_WARN("pool %s: the LISTEN connection's query failed: %s", pool_.describe().c_str(),
             auth::errorField(body, 'M').c_str());
  }
}

Release NotifyHub::ready(char) {
  if (!in_flight_.empty()) {
    std::vector<Subscriber*> waiters = std::move(in_flight_.front());
    in_flight_.pop_front();
    confirm(waiters);
  }
  if (channels_.empty() && in_flight_.empty() && unsent_.empty()) {
    drop("no client listens any more");  // it is beyond the pool's size: closed
    buffer_.clear();
  }
  return Release::kKeep;
}

void NotifyHub::serverLost(const std::string& why) {
  server_ = nullptr;
  linking_ = false;
  buffer_.clear();
  listened_.clear();
  LOG_WARN("pool %s: the LISTEN connection was lost (%s): its listeners are ended",
           pool_.describe().c_str(), why.c_str());
  // Notifications sent until another connection listened would be lost without a word: the
  // clients are told, as a direct connection's would be, and may LISTEN again.
  failAll(proto::buildFatal(proto::sqlstate::kConnectionFailure,
                            "pgproxy lost the connection that listened for this client: " + why));
}

}  // namespace pgproxy::pool
