// Fuzzes the startup-packet classifier and the StartupMessage parser.
#include <cstdint>
#include <string_view>

#include "pgproxy/proto/startup.h"
#include "pgproxy/proto/wire.h"

extern const char* const kFuzzTargetName = "startup";

extern "C" int LLVMFuzzerTestOneInput(const std::uint8_t* data, std::size_t size) {
  std::string_view bytes(reinterpret_cast<const char*>(data), size);
  auto pre = pgproxy::proto::classifyPreamble(bytes);
  if (pre.consumed > size) {
    __builtin_trap();
  }
  // A cancel's key is the rest of the packet, within the protocol's 4 to 256 bytes.
  if (pre.kind == pgproxy::proto::PreambleKind::kCancelRequest &&
      (pre.consumed != 12 + pre.cancel_key.size() ||
       pre.cancel_key.size() < pgproxy::proto::kMinCancelKey ||
       pre.cancel_key.size() > pgproxy::proto::kMaxCancelKey ||
       pre.cancel_key.data() != bytes.data() + 12)) {
    __builtin_trap();
  }
  if (pre.kind == pgproxy::proto::PreambleKind::kStartup) {
    pgproxy::proto::StartupParams params;
    (void)pgproxy::proto::parseStartup(bytes.substr(0, pre.consumed), params);
  }
  pgproxy::proto::MessageFramer framer(pgproxy::proto::MessageFramer::Framing::kPgMessages, true,
                                       pre.consumed);
  framer.feed(bytes, [](const pgproxy::proto::MessageFramer::Message&) {});
  pgproxy::proto::FrameTracker records(pgproxy::proto::FrameTracker::Kind::kTlsRecords);
  records.feed(bytes);
  pgproxy::proto::BackendKeyScanner scanner;
  for (std::size_t i = 0; i < size; i += 7) {
    scanner.feed(bytes.substr(i, 7));
  }
  if (scanner.state() == pgproxy::proto::BackendKeyScanner::State::kFound &&
      (scanner.key().size() < pgproxy::proto::kMinCancelKey ||
       scanner.key().size() > pgproxy::proto::kMaxCancelKey)) {
    __builtin_trap();
  }
  return 0;
}
