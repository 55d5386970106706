// Fuzzes the workers' control frames with any bytes (a peer on the control socket): decoding
// must never crash, and a frame that decodes must encode back to the same bytes.
#include <cstdint>
#include <string>
#include <string_view>

#include "pgproxy/admin/control_channel.h"

extern const char* const kFuzzTargetName = "control_channel";

extern "C" int LLVMFuzzerTestOneInput(const std::uint8_t* data, std::size_t size) {
  std::string_view bytes(reinterpret_cast<const char*>(data), size);
  pgproxy::admin::ControlRequest req;
  if (pgproxy::admin::decodeRequest(bytes, req) == pgproxy::admin::Decoded::kDone &&
      pgproxy::admin::encodeRequest(req) != bytes) {
    __builtin_trap();
  }
  pgproxy::admin::ControlReply reply;
  if (pgproxy::admin::decodeReply(bytes, reply) == pgproxy::admin::Decoded::kDone) {
    std::string again = pgproxy::admin::encodeReply(reply);
    pgproxy::admin::ControlReply twice;
    if (pgproxy::admin::decodeReply(again, twice) != pgproxy::admin::Decoded::kDone ||
        !(twice == reply)) {
      __builtin_trap();
    }
  }
  return 0;
}
