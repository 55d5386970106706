// Fuzzes what the log and the audit log do to client SQL: the password redactor (log_protocol,
// audit) and the literal redactor (audit.redact: literals) lex any bytes without crashing, and a
// secret inside a well-formed literal never survives, whatever the secret holds (quotes,
// backslashes, comment and dollar-quote starters); the audit classifier takes any bytes; and
// the audit log's JSON strings are valid UTF-8 without control characters whatever they carry.
#include <cstdint>
#include <string>
#include <string_view>

#include "pgproxy/base/json.h"
#include "pgproxy/proto/redact.h"
#include "pgproxy/sql/audit_class.h"

extern const char* const kFuzzTargetName = "redact";

namespace {

void expectRedacted(const std::string& sql, const std::string& want) {
  if (pgproxy::proto::redactPasswords(sql) != want) {
    __builtin_trap();
  }
}

void expectNoLiteral(const std::string& sql, const std::string& want) {
  if (pgproxy::proto::redactLiterals(sql) != want) {
    __builtin_trap();
  }
}

// A JSON string as appendJsonString writes it: quoted, no raw control character, valid UTF-8.
void expectJsonString(std::string_view text) {
  std::string out;
  pgproxy::base::appendJsonString(out, text);
  if (out.size() < 2 || out.front() != '"' || out.back() != '"') {
    __builtin_trap();
  }
  for (std::size_t i = 1; i + 1 < out.size();) {
    auto c = static_cast<unsigned char>(out[i]);
    if (c < 0x20 || c == 0x7f) {
      __builtin_trap();
    }
    if (c == '"') {
      __builtin_trap();  // an unescaped quote would end the string early
    }
    if (c == '\\') {
      i += 2;  // an escape: \" \\ \n \r \t \uXXXX (its hex digits are plain ASCII)
      continue;
    }
    std::size_t n = c < 0x80           ? 1
                    : (c >> 5) == 0x6  ? 2
                    : (c >> 4) == 0xE  ? 3
                    : (c >> 3) == 0x1E ? 4
                                       : 0;
    if (n == 0 || i + n > out.size() - 1) {
      __builtin_trap();
    }
    for (std::size_t k = 1; k < n; ++k) {
      if ((static_cast<unsigned char>(out[i + k]) & 0xC0) != 0x80) {
        __builtin_trap();
      }
    }
    i += n;
  }
}

}  // namespace

extern "C" int LLVMFuzzerTestOneInput(const std::uint8_t* data, std::size_t size) {
  std::string_view bytes(reinterpret_cast<const char*>(data), size);
  (void)pgproxy::proto::redactPasswords(bytes);
  (void)pgproxy::proto::redactLiterals(bytes);
  (void)pgproxy::sql::auditClass(bytes);
  expectJsonString(bytes);

  // The input as a password, in each literal form, quoted as a client would quote it. A NUL ends
  // a query on the wire, so it cannot be part of one.
  std::string secret;
  for (char c : bytes) {
    if (c != '\0') {
      secret.push_back(c);
    }
  }
  const std::string head = "ALTER ROLE r PASSWORD ";
  const std::string want = head + "'***'";
  std::string plain, escaped;
  for (char c : secret) {
    plain.push_back(c);
    escaped.push_back(c);
    if (c == '\'') {
      plain.push_back('\'');
      escaped.push_back('\'');
    } else if (c == '\\') {
      escaped.push_back('\\');
    }
  }
  expectRedacted(head + "'" + plain + "'", want);
  expectRedacted(head + "E'" + escaped + "'", want);
  // (Unless the secret closes the quote itself, also with the closing tag's first bytes.)
  if ((secret + "$pw$").find("$pw$") == secret.size()) {
    expectRedacted(head + "$pw$" + secret + "$pw$", want);
  }
  // Cut short anywhere inside the literal: nothing of it shows either.
  std::string literal = "'" + plain + "'";
  expectRedacted(head + literal.substr(0, 1 + secret.size() / 2), want);
  // audit.redact: literals: any literal anywhere, in each form.
  expectNoLiteral("SELECT '" + plain + "'", "SELECT ?");
  expectNoLiteral("SELECT E'" + escaped + "' FROM t", "SELECT ? FROM t");
  if ((secret + "$pw$").find("$pw$") == secret.size()) {
    expectNoLiteral("SELECT $pw$" + secret + "$pw$", "SELECT ?");
  }
  return 0;
}
