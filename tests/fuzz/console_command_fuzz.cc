// Fuzzes the admin console's command parser with any query text: it must never crash, and a
// command it accepts must read back the same from its formatted text.
#include <cstdint>
#include <string_view>

#include "pgproxy/admin/console_command.h"

extern const char* const kFuzzTargetName = "console_command";

extern "C" int LLVMFuzzerTestOneInput(const std::uint8_t* data, std::size_t size) {
  std::string_view sql(reinterpret_cast<const char*>(data), size);
  auto r = pgproxy::admin::parseCommand(sql);
  if (!r.ok()) {
    if (r.error().message.empty()) {
      __builtin_trap();  // every refusal says why
    }
    return 0;
  }
  auto again = pgproxy::admin::parseCommand(pgproxy::admin::formatCommand(*r));
  if (!again.ok() || !(*again == *r)) {
    __builtin_trap();
  }
  return 0;
}
