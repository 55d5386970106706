// Fuzzes SASLprep, which pgproxy applies to passwords of the auth file and of backend logins:
// arbitrary bytes (often not UTF-8) must never crash it, and what it returns must be well formed:
// a prepared string is UTF-8 (or the ASCII input unchanged), and a password SASLprep does not
// apply to is used exactly as given.
#include <cstdint>
#include <string>
#include <string_view>

#include "pgproxy/auth/saslprep.h"

extern const char* const kFuzzTargetName = "saslprep";

namespace {

bool wellFormedUtf8(std::string_view s) {
  std::string out;
  // ASCII or a prepared string: prepared again it is accepted (not necessarily unchanged).
  return pgproxy::auth::saslPrep(s, out) != pgproxy::auth::SaslPrepResult::kInvalidUtf8;
}

}  // namespace

extern "C" int LLVMFuzzerTestOneInput(const std::uint8_t* data, std::size_t size) {
  using pgproxy::auth::SaslPrepResult;
  std::string_view in(reinterpret_cast<const char*>(data), size);
  std::string out;
  SaslPrepResult r = pgproxy::auth::saslPrep(in, out);
  if (r == SaslPrepResult::kOk && !wellFormedUtf8(out)) {
    __builtin_trap();
  }
  std::string password = pgproxy::auth::scramPassword(in);
  if (r != SaslPrepResult::kOk ? password != in : password != out) {
    __builtin_trap();
  }
  return 0;
}
