#pragma once

#include <cstddef>
#include <cstdint>
#include <deque>
#include <set>
#include <string>
#include <string_view>
#include <utility>
#include <vector>

#include "pgproxy/pool/params.h"
#include "pgproxy/pool/prepared.h"

namespace pgproxy::pool {

// The session state a client of a transaction pool builds with SQL, beyond the parameters the
// server reports (those follow ParameterStatus): SET / RESET / set_config of unreported
// parameters, which pgproxy replays on the client's next server, and what cannot move between
// servers at all (session advisory locks, WITH HOLD cursors, temporary tables, LISTEN, settings
// pgproxy cannot decode), which pins the client to its server until it is released. SQL-level
// PREPARE / EXECUTE are refused (a server-side name that would not follow the client), and
// DEALLOCATE of a protocol-level name is handed to the prepared statement tracker.
//
// Pure: it sees the client's statements (through the tracker's QueryHook, in the order they go
// to the server) and the ReadyForQuery that answers each unit (a Query, or the messages up to a
// Sync), and applies what a transaction did once it has ended well, as PostgreSQL does (a SET in
// a transaction that rolls back, or after a savepoint rolled back to, never happened).
class SessionState final : public QueryHook {
 public:
  // Pinning sets of one client (cursor and channel names) hold at most this many; past it the
  // client stays pinned until it disconnects or DISCARD ALL.
  static constexpr std::size_t kMaxNames = 4096;
  // Statements of one simple Query looked at; a longer script pins the client (what it did is
  // not known).
  static constexpr std::size_t kMaxStatements = 1024;
  // Changes and savepoints one transaction may have pgproxy remember; past it the transaction
  // counts as one change pgproxy cannot follow (it pins the client if it commits).
  static constexpr std::size_t kMaxTransactionSteps = 65536;

  // `startup` is what the client's StartupMessage set beyond the reported parameters (RESET goes
  // back to it); `search_path_reported` says whether the servers report search_path (PostgreSQL
  // 18 on), so that its SETs are followed through ParameterStatus instead.
  SessionState(Params startup, bool search_path_reported)
      : startup_(std::move(startup)), search_path_reported_(search_path_reported) {}

  QueryVerdict onQuery(std::string_view sql) override;
  QueryVerdict onParse(std::string_view sql) override;
  void onError() override { unit_failed_ = true; }
  void onUnitEnd() override;
  // The probe's answer: how many session advisory locks the server holds for the client.
  void onOwnRow(std::string_view value) override;

  // The ReadyForQuery that answers the oldest unit, with its transaction status. Once a
  // transaction has ended well, what it did is applied to `client` (the parameters the client
  // wants on every server) and `server` (what the server it ran on now has); true when either
  // changed.
  bool ready(char status, Params& client, Params& server);

  // pgproxy rolled back the transaction under way on its own (read_write_split: optimistic):
  // nothing it did happened, and it is sent again.
  void abandonTransaction() { endTransaction(); }

  // The client must keep its server (the reason, for logs and the console), or "" when it may go.
  const char* pinned() const;

  // The LISTEN / UNLISTEN of committed transactions, for the notification hub, in order:
  // ('+', channel), ('-', channel), ('*', "") for all.
  std::vector<std::pair<char, std::string>> takeHubChanges() { return std::move(hub_changes_); }

  // After a transaction that called advisory lock functions: the query that asks the server how
  // many session advisory locks it holds for the client (pg_try_advisory_lock may have taken
  // none, a lock in a query over many rows may have been taken many times), to run before the
  // server goes back to the pool; nullptr when none is due. Its answer comes to onOwnRow.
  const char* takeProbe();
  static constexpr const char* kLockProbe =
      "SELECT count(*) FROM pg_catalog.pg_locks WHERE locktype = 'advisory' AND "
      "pid = pg_catalog.pg_backend_pid()";

 private:
  enum class Op : std::uint8_t {
    kSet,  // name, value
    kReset,
    kResetAll,
    kDiscardAll,
    kCommit,
    kRollback,
    kSavepoint,
    kRollbackTo,
    kRelease,
    kLock,  // n session advisory locks taken (not transactional)
    kUnlock,
    kUnlockAll,
    kHold,  // a WITH HOLD cursor
    kClose,
    kCloseAll,
    kTemp,
    kDiscardTemp,
    kListen,  // LISTEN run on the server (in a query with other statements): pins
    kUnlisten,
    kUnlistenAll,
    kSubscribe,  // LISTEN answered by pgproxy: the pool's notification hub listens
    kUnsubscribe,
    kUnsubscribeAll,
    kOpaque,  // a change pgproxy cannot follow
  };
  struct Step {
    Op op;
    std::string name, value;
    int n = 0;
  };
  // A statement's effects; false with `refusal` set for what a pool cannot carry.
  bool record(std::string_view sql, bool extended, std::string& refusal, std::string& deallocate);
  bool reported(std::string_view name) const;
  bool unit(const std::vector<Step>& steps, bool failed, Params& client, Params& server);
  bool commit(Params& client, Params& server);
  void endTransaction();

  Params startup_;
  bool search_path_reported_;
  std::vector<Step> open_;  // the unit being sent
  // Units sent and not yet answered that did something (numbered: most do nothing).
  std::deque<std::pair<std::uint64_t, std::vector<Step>>> sent_;
  std::uint64_t units_sent_ = 0, units_answered_ = 0;
  bool unit_failed_ = false;  // the server sent an error in the unit being answered
  // The transaction being answered: its steps, its savepoints (name, steps before it), whether it
  // failed.
  std::vector<Step> tx_;
  std::vector<std::pair<std::string, std::size_t>> savepoints_;
  bool tx_failed_ = false;
  // Pins.
  std::int64_t locks_ = 0;
  bool advisory_touched_ = false, probe_due_ = false;
  std::set<std::string> cursors_, channels_;
  bool temp_ = false, opaque_ = false, overflow_ = false;
  std::vector<std::pair<char, std::string>> hub_changes_;
  std::set<std::string> subscribed_;
};

}  // namespace pgproxy::pool
