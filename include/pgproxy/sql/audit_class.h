#pragma once

#include <cstdint>
#include <string_view>

// What kind of statement a text holds, for audit.statements (ddl, write, all).
namespace pgproxy::sql {

enum class AuditClass : std::uint8_t { kRead, kWrite, kDdl };

// The highest class among the statements of `sql` (a Query may hold several):
//   kDdl: CREATE, ALTER, DROP, GRANT, REVOKE, COMMENT, SECURITY LABEL, REINDEX, REFRESH,
//         IMPORT FOREIGN SCHEMA, REASSIGN OWNED (role statements included);
//   kWrite: INSERT, UPDATE, DELETE, MERGE, TRUNCATE, COPY ... FROM, CALL, DO, EXECUTE (what it
//         runs is not in the text), and a SELECT/WITH/VALUES/TABLE the read/write split would
//         not prove a read (a function call not known to be read-only, INTO, a data-modifying
//         CTE, FOR UPDATE); EXPLAIN ANALYZE and PREPARE take the class of what they run;
//   kRead: the rest (SELECT, SHOW, SET, BEGIN, COMMIT, LISTEN, ...).
// Text the lexer cannot follow (an unterminated quote or comment) is kWrite: an auditor would
// rather see it. Pure: no I/O.
AuditClass auditClass(std::string_view sql);

const char* auditClassName(AuditClass c);

}  // namespace pgproxy::sql
