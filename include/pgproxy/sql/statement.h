#pragma once

#include <cstddef>
#include <string>
#include <string_view>
#include <vector>

namespace pgproxy::sql {

// What a transaction pool needs to know about one SQL statement a client sends: whether it
// changes the session (SET, PREPARE, LISTEN, temp tables, cursors WITH HOLD, advisory locks) and
// the names it touches. Pure: no I/O, no allocation beyond the result. The lexer behind it knows
// PostgreSQL's comments (-- and nested /* */), quoted identifiers (with "" inside), string
// literals (standard, E'' with backslash escapes, U&'' and U&""), and dollar quotes ($$, $tag$),
// so that a keyword inside any of them is never taken for a statement.
enum class Kind {
  kOther,          // nothing a pool tracks
  kEmpty,          // only whitespace and comments
  kBegin,          // BEGIN / START TRANSACTION
  kCommit,         // COMMIT / END / COMMIT PREPARED is kOther
  kRollback,       // ROLLBACK / ABORT (not ROLLBACK TO SAVEPOINT: kOther)
  kSet,            // SET [SESSION] name {TO|=} value; name lower-cased, value as written;
                   // also SET TIME ZONE (timezone), SET SCHEMA (search_path), SET NAMES
                   // (client_encoding), SET ROLE (role), SET SESSION AUTHORIZATION
  kSetLocal,       // SET LOCAL ...: ends with the transaction, nothing to track
  kReset,          // RESET name, and SET name TO DEFAULT (SET TIME ZONE LOCAL, SET ROLE NONE)
  kResetAll,       // RESET ALL
  kPrepare,        // PREPARE name [(types)] AS ...; name as PostgreSQL folds it
  kExecute,        // EXECUTE name [(args)]
  kDeallocate,     // DEALLOCATE [PREPARE] name
  kDeallocateAll,  // DEALLOCATE [PREPARE] ALL
  kDiscardAll,     // DISCARD ALL
  kDiscardTemp,    // DISCARD TEMP / TEMPORARY
  kDiscardOther,   // DISCARD PLANS / SEQUENCES
  kListen,         // LISTEN channel
  kUnlisten,       // UNLISTEN channel
  kUnlistenAll,    // UNLISTEN *
  kDeclareHold,    // DECLARE name ... WITH HOLD ...
  kClose,          // CLOSE name (a cursor)
  kCloseAll,       // CLOSE ALL
  kCreateTemp,     // CREATE [GLOBAL|LOCAL] {TEMP|TEMPORARY} {TABLE|VIEW|SEQUENCE} ...
                   // (not ON COMMIT DROP), CREATE ... pg_temp.x, SELECT ... INTO TEMP
  kSetOther,       // a SET that changes the session in a way not expressible as one GUC
                   // (SET SESSION CHARACTERISTICS AS TRANSACTION ..., SET x FROM CURRENT)
  kSavepoint,      // SAVEPOINT name
  kRollbackTo,     // ROLLBACK [WORK | TRANSACTION] TO [SAVEPOINT] name
  kRelease,        // RELEASE [SAVEPOINT] name
};

struct Statement {
  Kind kind = Kind::kOther;
  // The object it names, as PostgreSQL folds identifiers (unquoted: lower-cased; quoted: as
  // written, "" unescaped): the GUC of SET/RESET, the prepared statement, the channel, the
  // cursor. Empty when the kind names none.
  std::string name;
  // SET: the value text as written (after TO / =), trimmed, for replaying the SET verbatim.
  std::string value;
  // The statement's own text, trimmed, without its ';'.
  std::string_view text;
  // Calls anywhere in the statement (outside literals and comments) of
  // pg_advisory_lock / pg_advisory_lock_shared / pg_try_advisory_lock[_shared] (session-level
  // locks; the _xact_ ones end with the transaction and are not counted), of
  // pg_advisory_unlock[_shared], pg_advisory_unlock_all, and set_config(...) with a third argument
  // that is not the literal true (a session-level set_config).
  bool advisory_lock = false;
  bool advisory_unlock = false;
  bool advisory_unlock_all = false;
  bool set_config = false;
  // How many lock and unlock calls the text holds (a call in a query over many rows still counts
  // once: the text is all a pool sees).
  int advisory_locks = 0;
  int advisory_unlocks = 0;
  // The set_config calls whose name is a literal pgproxy decodes, in order (at most
  // kMaxConfigCalls): value_known when the value is a literal too and is_local the literal false
  // (a session-level setting of that value); else the call may set the parameter, for the
  // session, to a value only the server knows (a parameter, an expression). set_config_opaque
  // says a call's name itself was not decoded (or there were more calls), so its effect is
  // unknown.
  struct ConfigCall {
    std::string name, value;
    bool value_known = true;
  };
  static constexpr std::size_t kMaxConfigCalls = 8;
  std::vector<ConfigCall> config_calls;
  bool set_config_opaque = false;
};

// Splits a simple Query's text into its statements (at ';' outside quotes, comments and
// parentheses) and classifies each. At most `max` statements are returned; `truncated` says
// there were more. An unterminated quote or comment ends the last statement there and makes it
// kOther with no name (PostgreSQL refuses it, so it changes nothing): never a crash, never a read
// past the end. Statements with no tokens
// (";;") are skipped; an input with none at all gives one kEmpty statement. Strings are lexed as
// with standard_conforming_strings on (PostgreSQL's default since 9.1).
struct Split {
  std::vector<Statement> statements;
  bool truncated = false;
};
Split split(std::string_view sql, std::size_t max = 64);

// Folds one identifier as PostgreSQL does: lower-cased unless double-quoted ("" unescaped).
std::string foldIdentifier(std::string_view ident);

// The string a SET's value (Statement::value) gives its parameter, as set_config would take it:
// literals decoded, unquoted words lower-cased, a list joined with ", " (a quoted identifier in a
// list keeps its quotes, as PostgreSQL's list parameters need). False for what pgproxy does not
// decode exactly (INTERVAL '1' HOUR, escapes it does not interpret, anything unterminated).
bool settingValue(std::string_view value, std::string& out);

// Quotes `name` as an identifier for SQL pgproxy writes (always quoted, " doubled).
std::string quoteIdentifier(std::string_view name);

}  // namespace pgproxy::sql
