// Fuzzes the admin console's wire side with any bytes a logged-in client could send, split at a
// point the input chooses: it must never crash, every reply it writes must be whole protocol
// messages, and once it says the session is over it stays over.
#include <cstdint>
#include <string>
#include <string_view>

#include "pgproxy/admin/console.h"
#include "pgproxy/proto/wire.h"

extern const char* const kFuzzTargetName = "console";

namespace {

// True when `out` is a sequence of whole backend messages.
bool wholeMessages(std::string_view out) {
  while (out.size() >= 5) {
    std::uint32_t len = pgproxy::proto::readU32(out.data() + 1);
    if (len < 4 || out.size() < 1 + static_cast<std::size_t>(len)) {
      return false;
    }
    out.remove_prefix(1 + len);
  }
  return out.empty();
}

}  // namespace

extern "C" int LLVMFuzzerTestOneInput(const std::uint8_t* data, std::size_t size) {
  if (size == 0) {
    return 0;
  }
  std::size_t cut = data[0] % size;
  std::string_view bytes(reinterpret_cast<const char*>(data) + 1, size - 1);
  // No shared tables and no master: every command runs its refusal paths.
  pgproxy::admin::Console console(pgproxy::admin::CommandEnv{});
  std::string out;
  auto first = console.feed(bytes.substr(0, cut < bytes.size() ? cut : bytes.size()), out);
  if (!wholeMessages(out)) {
    __builtin_trap();
  }
  out.clear();
  auto second = console.feed(bytes.substr(cut < bytes.size() ? cut : bytes.size()), out);
  if (!wholeMessages(out)) {
    __builtin_trap();
  }
  using Status = pgproxy::admin::Console::Status;
  if (first == Status::kClose && (second != Status::kClose || !out.empty())) {
    __builtin_trap();
  }
  return 0;
}
