#pragma once

#include <cstddef>
#include <cstdint>
#include <deque>
#include <list>
#include <memory>
#include <string>
#include <string_view>
#include <unordered_map>
#include <unordered_set>
#include <utility>
#include <vector>

namespace pgproxy::pool {

// Protocol-level named prepared statements over a transaction pool. A client's statement lives
// on whichever servers it has run on, under a name pgproxy derives from its text and parameter
// types, so that every client preparing the same text shares one server copy; the client's own
// name maps to it. Pure: bytes in, bytes out, no I/O, so that the reply order can be unit-tested
// and fuzzed.

// One statement text as pgproxy prepares it on servers. Reference-counted by the clients that
// name it, the servers that hold it and the replies still expected for it.
struct PreparedStatement {
  std::string key;    // query '\0' parameter type OIDs (raw): what makes two statements one
  std::string name;   // its name on servers
  std::string parse;  // the Parse message that creates it on a server
  std::uint32_t refs = 0;
};

// A worker's statements. Memory is bounded by the bytes of their texts.
class StatementRegistry {
 public:
  explicit StatementRegistry(std::size_t max_bytes = std::size_t{64} << 20) : max_(max_bytes) {}
  ~StatementRegistry();
  StatementRegistry(const StatementRegistry&) = delete;
  StatementRegistry& operator=(const StatementRegistry&) = delete;

  // The statement for this query and types (raw OIDs), with a reference taken; nullptr when the
  // registry is full.
  PreparedStatement* intern(std::string_view query, std::string_view types);
  static void ref(PreparedStatement* s) { ++s->refs; }
  void unref(PreparedStatement* s);
  std::size_t size() const { return by_key_.size(); }
  std::size_t bytes() const { return bytes_; }

 private:
  std::size_t max_;
  std::size_t bytes_ = 0;
  std::unordered_map<std::string_view, std::unique_ptr<PreparedStatement>> by_key_;
  std::unordered_set<std::string_view> names_;
};

// What one server connection has prepared: an LRU of statements, at most `capacity` (pgproxy
// Closes the least recently used one to make room), and the names it must still Close before
// anything else is sent (a statement whose cached plan went stale).
class ServerStatements {
 public:
  explicit ServerStatements(StatementRegistry& registry) : registry_(registry) {}
  ~ServerStatements() { clear(); }
  ServerStatements(const ServerStatements&) = delete;
  ServerStatements& operator=(const ServerStatements&) = delete;

  bool has(PreparedStatement* s) const { return index_.count(s) != 0; }
  void touch(PreparedStatement* s, std::uint64_t batch);
  void add(PreparedStatement* s, std::uint64_t batch);
  void remove(PreparedStatement* s);
  // The least recently used statement not used by the batch in flight; nullptr if none.
  PreparedStatement* victim(std::uint64_t batch) const;
  void clear();  // the server dropped them all (DISCARD ALL, DEALLOCATE ALL)
  std::size_t size() const { return index_.size(); }
  std::vector<std::string>& toClose() { return to_close_; }

 private:
  struct Slot {
    std::list<PreparedStatement*>::iterator at;
    std::uint64_t batch = 0;
  };
  StatementRegistry& registry_;
  std::list<PreparedStatement*> lru_;  // most recently used first
  std::unordered_map<PreparedStatement*, Slot> index_;
  std::vector<std::string> to_close_;
};

// What pgproxy does with a client's simple Query (the session state, LISTEN, refusals): the
// verdict of a QueryHook.
struct QueryVerdict {
  enum class Action { kForward, kAnswer, kRefuse, kDeallocate };
  Action action = Action::kForward;
  // kAnswer: the CommandComplete(s) the client gets instead of the server's reply; kRefuse: the
  // ErrorResponse. Either way a query still goes to the server in its place (an empty one, or
  // one that fails), so that the ReadyForQuery, its transaction status and the pool's accounting
  // are the server's own.
  std::string reply;
  // kDeallocate: SQL DEALLOCATE of this name, sent alone: the tracker answers it for a
  // protocol-level statement of the client's (the server's copy is shared, and stays).
  std::string name;
};
class QueryHook {
 public:
  // A simple Query's text, before it goes to the server.
  virtual QueryVerdict onQuery(std::string_view sql) = 0;
  // A Parse's query text (extended protocol), before it goes to the server: any verdict; kAnswer
  // (its Execute's reply) only for the unnamed statement.
  virtual QueryVerdict onParse(std::string_view sql) = 0;
  // The server sent the client an ErrorResponse.
  virtual void onError() = 0;
  // A Query or a Sync went to the server: one ReadyForQuery answers it and what came before it.
  virtual void onUnitEnd() = 0;
  // The first column of the first row pgproxy's own query (PreparedTracker::ownQuery) returned;
  // not called when it returned none or failed.
  virtual void onOwnRow(std::string_view value) = 0;

 protected:
  ~QueryHook() = default;
};

// One client's prepared statements and the replies it is owed. Client messages go through
// fromClient on their way to the linked server: Parse, Bind, Describe and Close of named
// statements are rewritten to the server's names, a Parse the server already has is answered by
// pgproxy, a statement the server lacks is Parsed first, and a Close is answered by pgproxy.
// Server messages go through fromServer on their way back: replies to pgproxy's own messages are
// dropped, and the replies pgproxy made are put in their place in the order the client sent its
// messages. After an error the server ignores everything up to the next Sync, and so do the
// replies pgproxy would have made.
class PreparedTracker {
 public:
  // Longest named Parse (and Bind prefix, Describe, Close) pgproxy holds whole.
  static constexpr std::size_t kMaxHeld = std::size_t{1} << 20;
  // Pending replies a client may have in flight (a pipeline deeper than this is refused).
  static constexpr std::size_t kMaxPending = 1u << 20;
  // Names one client may have (PostgreSQL has no limit; pgproxy's memory has).
  static constexpr std::size_t kMaxNames = 65536;

  // `capacity` 0: named statements pass through as the client names them (only the query hook
  // and the reply order are kept).
  PreparedTracker(StatementRegistry& registry, std::size_t capacity)
      : registry_(registry), capacity_(capacity) {}
  // Sees each simple Query and Parse of up to kMaxHeld bytes (an unnamed Parse: kMaxLooked)
  // before it goes to the server.
  void setQueryHook(QueryHook* hook) { hook_ = hook; }
  static constexpr std::size_t kMaxLooked = std::size_t{64} << 10;
  ~PreparedTracker();
  PreparedTracker(const PreparedTracker&) = delete;
  PreparedTracker& operator=(const PreparedTracker&) = delete;

  // The client's bytes, in order, for `server`: what goes to the server is appended to
  // `to_server`, replies pgproxy makes that are due now to `to_client`. False: the client must
  // be ended with fatal() (a message pgproxy cannot hold, memory full, a malformed stream).
  bool fromClient(std::string_view bytes, ServerStatements& server, std::string& to_server,
                  std::string& to_client);
  // The server's bytes, in order; `server` is nullptr once it has gone back to its pool (only
  // its final ReadyForQuery can come then).
  // Messages that waited for the batches in flight to be answered go on (to `to_server`) once
  // they have been. False as for fromClient.
  bool fromServer(std::string_view bytes, ServerStatements* server, std::string& to_server,
                  std::string& to_client);
  // Client bytes waiting (the caller stops reading the client when there are too many).
  std::size_t waiting() const { return deferred_.size(); }
  // Sends pgproxy's own simple Query after all sent so far: the client sees none of its replies;
  // its first value goes to the hook (QueryHook::onOwnRow).
  void ownQuery(std::string_view sql, std::string& to_server);
  // The ReadyForQuery about to come (all before it has been read) answers pgproxy's own query.
  // (Also the ReadyForQuery of a batch pgproxy is running again: see kRetry.)
  bool ownReadyNext() const {
    return !pending_.empty() &&
           (pending_.front().kind == Kind::kOwnQuery || pending_.front().kind == Kind::kRetry);
  }
  // The most of a batch pgproxy keeps to run again after a stale plan.
  static constexpr std::size_t kMaxRetried = std::size_t{64} << 10;

  const std::string& fatal() const { return fatal_; }
  std::size_t statements() const { return names_.size(); }
  std::size_t pending() const { return pending_.size(); }
  // The text of the client's named statement `name`; empty when it has none of that name.
  std::string_view queryOf(std::string_view name) const {
    auto it = names_.find(std::string(name));
    if (it == names_.end() || !it->second) {
      return {};
    }
    std::string_view key = it->second->key;
    return key.substr(0, key.find('\0'));
  }
  // Forgets the client's statement `name`, if it has one: a Parse that made it is about to run
  // again (read_write_split: optimistic moves a transaction to another server).
  void forgetName(std::string_view name);
  // Nothing to remember: no names, nothing in flight or waiting.
  bool idle() const { return names_.empty() && pending_.empty() && deferred_.empty(); }

 private:
  enum class Kind : std::uint8_t {
    kParse,  // forwarded; stmt set when it creates a server statement
    kBind,   // stmt: the statement bound (for a stale plan)
    kDescribeStatement,
    kDescribePortal,
    kExecute,  // stmt: the statement of the portal's Bind, when pgproxy knows it
    kClose,    // a portal's or the unnamed statement's Close, forwarded
    kSync,
    kQuery,      // a simple Query or a FunctionCall: replies up to ReadyForQuery
    kOwnParse,   // pgproxy's Parse: its ParseComplete is dropped
    kOwnClose,   // pgproxy's Close: its CloseComplete is dropped
    kOwnQuery,   // pgproxy's Query: every reply up to its ReadyForQuery is dropped
    kMadeParse,  // a ParseComplete pgproxy makes
    kMadeClose,  // a CloseComplete pgproxy makes
    kMadeError,  // an ErrorResponse pgproxy makes (then it drops up to the Sync)
    kRetry,      // a batch failed on a stale plan and is sent again: its ReadyForQuery is dropped
  };
  struct Pending {
    Pending(Kind k, PreparedStatement* s = nullptr, std::string name = {}, std::string err = {},
            bool made_server_copy = false)
        : kind(k),
          stmt(s),
          client_name(std::move(name)),
          error(std::move(err)),
          created(made_server_copy) {}
    Kind kind;
    PreparedStatement* stmt = nullptr;  // a reference is held
    std::string client_name;            // the name a Parse added or a Close removed
    std::string error;                  // kMadeError: the message
    bool created = false;               // kParse: it added stmt to the server's statements
    // kQuery, kExecute: the server message ('I' or 'E') whose place `error` takes.
    char replace = 0;
    bool retry = false;  // kBind: the first of the batch kept (cleared once it ran again)
  };
  // A batch whose first Bind names a statement pgproxy prepared is kept, from that Bind to its
  // Sync, until it is answered: if the server says the statement's plan went stale (DDL changed
  // its result), pgproxy prepares it afresh and sends the batch again, and the client never sees
  // the error. Only a batch that nothing can have been seen or done of before that Bind (outside
  // a transaction, first to run, alone in flight).
  enum class Retry : std::uint8_t { kNone, kKeeping, kKept };
  enum class In : std::uint8_t { kHeader, kHold, kPass, kDrop };

  void message(std::string_view body, ServerStatements& server, std::string& to_server,
               std::string& to_client);
  void parse(std::string_view body, ServerStatements& server, std::string& to_server,
             std::string& to_client);
  bool bindPrefix(ServerStatements& server, std::string& to_server, std::string& to_client);
  void describeOrClose(char type, std::string_view body, ServerStatements& server,
                       std::string& to_server, std::string& to_client);
  // The server statement for a client's name, made present on `server` (Parse sent first if it
  // lacks it); nullptr with the error queued when the client has no such statement.
  PreparedStatement* use(std::string_view name, ServerStatements& server, std::string& to_server,
                         std::string& to_client);
  void closeStale(ServerStatements& server, std::string& to_server);
  void makeRoom(ServerStatements& server, std::string& to_server);
  void push(Pending p, std::string& to_client);
  void made(std::string& to_client);  // the replies pgproxy makes that are due now
  void drop(Pending& p, ServerStatements* server);
  void dropToSync(ServerStatements* server);
  void popFront();    // pending_.front(), its statement reference released
  void popPending();  // pending_.front(), keeping batches_out_
  bool mustWait();
  bool resume(ServerStatements& server, std::string& to_server, std::string& to_client);
  void query(std::string_view body, std::string& to_server, std::string& to_client);
  void refuse(std::string sqlstate, std::string message, std::string& to_client);
  void refuseWith(std::string error, std::string& to_client);
  static bool endsTransaction(std::string_view query);
  // A QueryHook's kDeallocate: answered (kAnswer), refused, or the server's (kForward).
  void deallocate(QueryVerdict& v);
  // What the hook makes of an unnamed (or, without renaming, any) Parse.
  enum class Look { kHold, kPass, kDone };
  Look lookAtParse(std::string_view body, std::string& to_server, std::string& to_client);
  bool feed(std::string_view bytes, ServerStatements& server, std::string& to_server,
            std::string& to_client);
  void keepSent(const std::string& to_server);  // what went to the server of the batch kept
  void forgetKept();
  // The ErrorResponse held in s_held_ says the Bind in front failed on a stale plan, and the
  // batch was sent again; false: the error is the client's.
  bool retryStale(ServerStatements* server, std::string& to_server);
  void serverMessageEnd(ServerStatements* server);
  void ownRow();  // the DataRow of pgproxy's own query, held in s_held_
  bool fail(std::string why);

  StatementRegistry& registry_;
  std::size_t capacity_;
  QueryHook* hook_ = nullptr;
  std::unordered_map<std::string, PreparedStatement*> names_;  // the client's names
  std::deque<Pending> pending_;
  std::uint64_t batch_ = 1;       // Syncs sent: statements of the batch in flight are not evicted
  bool server_skipping_ = false;  // the server failed and ignores all up to the next Sync
  bool client_skipping_ = false;  // pgproxy failed a message: the same, done here
  char tx_status_ = 'I';          // the last ReadyForQuery's
  std::size_t batches_out_ = 0;   // Syncs and Queries sent and not answered
  bool waiting_ = false;          // the message being decided waits for them
  std::string deferred_;          // that message and all the client sent after it
  // The unnamed statement stands in for a statement pgproxy answered (DEALLOCATE, LISTEN): what
  // its Execute gets instead of the EmptyQueryResponse.
  std::string unnamed_reply_;
  std::string fatal_;
  bool batch_seen_ = false;  // the batch being sent has done or described something
  Retry retry_ = Retry::kNone;
  std::size_t keep_from_ = 0;  // where in to_server the kept batch's bytes start (this call)
  std::string kept_;           // the batch kept, as it went to the server

  // The client's stream.
  In in_ = In::kHeader;
  char header_[5] = {};
  std::size_t header_have_ = 0;
  std::uint32_t left_ = 0;  // body bytes still to come
  std::string held_;        // the body (or its prefix) of the message held
  // The server's stream.
  char s_header_[5] = {};
  std::size_t s_header_have_ = 0;
  std::uint32_t s_left_ = 0;
  bool s_in_body_ = false;
  bool s_drop_ = false;
  bool s_own_row_ = false;  // holding the first DataRow of pgproxy's own query
  bool s_hold_ = false;     // holding an ErrorResponse that may be a stale plan's
  std::string s_held_;      // the start of an ErrorResponse or CommandComplete body
};

}  // namespace pgproxy::pool
