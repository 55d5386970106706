// Fuzzes the read/write split's classifier, which reads every transaction's first statement a
// client sends: arbitrary bytes (unterminated quotes and comments, NUL bytes, deep parentheses)
// must never crash it or read past the input, and a primary hint always wins.
#include <cstdint>
#include <string>
#include <string_view>

#include "pgproxy/sql/read_only.h"

extern const char* const kFuzzTargetName = "read_only";

extern "C" int LLVMFuzzerTestOneInput(const std::uint8_t* data, std::size_t size) {
  std::string_view sql(reinterpret_cast<const char*>(data), size);
  static const pgproxy::sql::ReadOnlyFunctions kFunctions({"app.lookup", "my_func"});
  pgproxy::sql::SplitDecision d = pgproxy::sql::classifyForSplit(sql, kFunctions);
  if (d.reason == nullptr) {
    __builtin_trap();
  }
  // The same text with a primary hint in front always goes to the primary.
  std::string hinted = "/* pgproxy: primary */ " + std::string(sql);
  if (pgproxy::sql::classifyForSplit(hinted, kFunctions).target != pgproxy::sql::Target::kPrimary) {
    __builtin_trap();
  }
  return 0;
}
