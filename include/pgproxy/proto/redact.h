#pragma once

#include <string>
#include <string_view>

namespace pgproxy::proto {

// Replaces the literal that follows a PASSWORD keyword in client SQL with '***', for log_protocol:
// ALTER ROLE/USER ... [ENCRYPTED] PASSWORD '...', CREATE ROLE/USER ... PASSWORD '...', FDW and
// user-mapping OPTIONS (password '...'), and `password = '...'` comparisons and assignments.
//
// A lexer, not a pattern match: PASSWORD is a whole word outside strings, comments and quoted
// identifiers (or the quoted identifier "password"); comments and one '=' may come between it and
// the literal. Literals of every form are covered: '...', E'...', U&'...', N/B/X'...', $$...$$ and
// $tag$...$tag$, and numbers. A literal that does not end (the capture was cut short) is redacted
// to the end of the text. The text is lexed twice, with standard_conforming_strings on and off,
// and what either pass would redact is redacted, so a backslash cannot hide a secret from it.
// A NUL ends a statement text (a Parse message holds name, NUL, query, NUL).
//
// Pure: no I/O, no state; any bytes are accepted.
std::string redactPasswords(std::string_view sql);

// audit.redact: literals: every literal (strings of every form, dollar quotes, numbers) becomes
// `?`, lexed the same two ways, so that no value a statement carries reaches the audit log.
std::string redactLiterals(std::string_view sql);

}  // namespace pgproxy::proto
