// Fuzzes the password redactor that log_protocol applies to client SQL: any bytes are lexed
// without crashing, and a secret inside a well-formed literal after PASSWORD never survives,
// whatever the secret holds (quotes, backslashes, comment and dollar-quote starters).
#include <cstdint>
#include <string>
#include <string_view>

#include "pgproxy/proto/redact.h"

extern const char* const kFuzzTargetName = "redact";

namespace {

void expectRedacted(const std::string& sql, const std::string& want) {
  if (pgproxy::proto::redactPasswords(sql) != want) {
    __builtin_trap();
  }
}

}  // namespace

extern "C" int LLVMFuzzerTestOneInput(const std::uint8_t* data, std::size_t size) {
  std::string_view bytes(reinterpret_cast<const char*>(data), size);
  (void)pgproxy::proto::redactPasswords(bytes);

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
  return 0;
}
