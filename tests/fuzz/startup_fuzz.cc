// Fuzzes the startup-packet classifier, the StartupMessage parser and what routing reads of it
// (routes, target_session_attrs in options, the rewritten packet).
#include <cstdint>
#include <string_view>

#include "pgproxy/proto/startup.h"
#include "pgproxy/proto/wire.h"
#include "pgproxy/route/startup_route.h"

extern const char* const kFuzzTargetName = "startup";

namespace {

// A mapping with one backend of its own and routes of each kind.
const pgproxy::config::Mapping& routedMapping() {
  static const pgproxy::config::Mapping m = [] {
    pgproxy::config::Mapping out;
    out.backends = {{"a", 5432, 1, {}}, {"b", 5432, 1, {}}};
    out.own_backends = 1;
    pgproxy::config::Route billing;
    billing.match.database = "bill*";
    billing.backends = {1};
    billing.database = "billing_prod";
    pgproxy::config::Route reports;
    reports.match.user = "rep?rt*";
    reports.match.application_name = "*x*";
    reports.role = pgproxy::config::BackendRole::kStandby;
    reports.has_role = true;
    out.routes = {billing, reports};
    return out;
  }();
  return m;
}

void checkRoute(const pgproxy::proto::StartupParams& params) {
  using pgproxy::route::Decision;
  Decision d = pgproxy::route::decide(routedMapping(), params.version, params.params);
  if (d.kind == Decision::Kind::kRouted && d.backends == 0) {
    __builtin_trap();  // routed nowhere
  }
  if (d.startup.empty()) {
    return;
  }
  // The packet sent instead parses, and never carries target_session_attrs.
  pgproxy::proto::StartupParams sent;
  if (pgproxy::proto::parseStartup(d.startup, sent) == pgproxy::proto::StartupError::kBadLayout) {
    // Only a name or value with a NUL inside could make it so, which parseStartup never gives.
    __builtin_trap();
  }
  for (const auto& [name, value] : sent.params) {
    if (name == "target_session_attrs") {
      __builtin_trap();
    }
  }
}

}  // namespace

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
    if (pgproxy::proto::parseStartup(bytes.substr(0, pre.consumed), params) ==
        pgproxy::proto::StartupError::kNone) {
      checkRoute(params);
    }
  }
  // Globs: the first byte splits the input into a pattern and a text.
  if (size > 1) {
    std::size_t cut = data[0] % size;
    (void)pgproxy::route::globMatch(bytes.substr(1, cut), bytes.substr(1 + cut));
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
