#include "pgproxy/sql/audit_class.h"

#include <algorithm>
#include <initializer_list>

#include "pgproxy/sql/lexer.h"
#include "pgproxy/sql/read_only.h"

namespace pgproxy::sql {
namespace {

bool oneOf(std::string_view word, std::initializer_list<std::string_view> words) {
  return std::any_of(words.begin(), words.end(),
                     [&](std::string_view w) { return iequals(word, w); });
}

// A query (SELECT, WITH, VALUES, TABLE, or one in parentheses): a read only where the read/write
// split would send it to a standby.
AuditClass classifyQuery(std::string_view stmt) {
  static const ReadOnlyFunctions kNoExtra;
  return classifyForSplit(stmt, kNoExtra).target == Target::kStandby ? AuditClass::kRead
                                                                     : AuditClass::kWrite;
}

// One statement, from its first token.
AuditClass classifyOne(std::string_view stmt) {
  Lexer lex(stmt);
  Token t = lex.next();
  if (t.type == Tok::kPunct && t.quote == '(') {
    return classifyQuery(stmt);
  }
  if (t.type != Tok::kIdent) {
    return AuditClass::kRead;  // empty
  }
  std::string_view word = stmt.substr(t.begin, t.end - t.begin);
  if (oneOf(word, {"create", "alter", "drop", "grant", "revoke", "comment", "security", "reindex",
                   "refresh", "import", "reassign"})) {
    return AuditClass::kDdl;
  }
  if (oneOf(word, {"insert", "update", "delete", "merge", "truncate", "call", "do", "execute"})) {
    return AuditClass::kWrite;
  }
  if (iequals(word, "copy")) {
    // COPY t FROM ... writes; COPY t TO / COPY (query) TO reads (the query's FROM is nested).
    int depth = 0;
    for (Token u = lex.next(); u.type != Tok::kEnd; u = lex.next()) {
      if (u.type == Tok::kPunct && u.quote == '(') {
        ++depth;
      } else if (u.type == Tok::kPunct && u.quote == ')') {
        --depth;
      } else if (depth == 0 && u.type == Tok::kIdent &&
                 iequals(stmt.substr(u.begin, u.end - u.begin), "from")) {
        return AuditClass::kWrite;
      }
    }
    return AuditClass::kRead;
  }
  if (oneOf(word, {"explain", "prepare"})) {
    // EXPLAIN runs the statement only with ANALYZE; PREPARE name [(types)] AS statement.
    bool runs = iequals(word, "prepare");
    for (Token u = lex.next(); u.type != Tok::kEnd; u = lex.next()) {
      if (u.type != Tok::kIdent) {
        continue;
      }
      std::string_view w = stmt.substr(u.begin, u.end - u.begin);
      if (iequals(w, "analyze") || iequals(w, "analyse")) {
        runs = true;
      } else if (oneOf(w, {"select", "with", "values", "table", "insert", "update", "delete",
                           "merge", "create", "execute", "declare"})) {
        return runs ? classifyOne(stmt.substr(u.begin)) : AuditClass::kRead;
      }
    }
    return AuditClass::kRead;
  }
  if (oneOf(word, {"select", "with", "values", "table"})) {
    return classifyQuery(stmt);
  }
  return AuditClass::kRead;
}

}  // namespace

AuditClass auditClass(std::string_view sql) {
  // A Parse body is "name\0query\0": only the query is SQL.
  if (std::size_t nul = sql.find('\0'); nul != std::string_view::npos) {
    sql = sql.substr(0, nul);
  }
  AuditClass worst = AuditClass::kRead;
  Lexer lex(sql);
  std::size_t start = 0;
  for (;;) {
    Token t = lex.next();
    bool end = t.type == Tok::kEnd;
    if (end || (t.type == Tok::kPunct && t.quote == ';')) {
      std::string_view stmt = sql.substr(start, (end ? sql.size() : t.begin) - start);
      worst = std::max(worst, classifyOne(stmt));
      start = t.end;
    }
    if (end) {
      break;
    }
  }
  if (lex.unterminated()) {
    worst = std::max(worst, AuditClass::kWrite);
  }
  return worst;
}

const char* auditClassName(AuditClass c) {
  switch (c) {
    case AuditClass::kRead:
      return "read";
    case AuditClass::kWrite:
      return "write";
    case AuditClass::kDdl:
      return "ddl";
  }
  return "read";
}

}  // namespace pgproxy::sql
