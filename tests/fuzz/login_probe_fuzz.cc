// Fuzzes what a backend (or anything listening where one should be) can send the health checker:
// the LoginProbe's message handling, including the SCRAM server messages and md5 salts.
#include <cstdint>
#include <string>
#include <string_view>

#include "pgproxy/upstream/login_probe.h"

extern const char* const kFuzzTargetName = "login_probe";

extern "C" int LLVMFuzzerTestOneInput(const std::uint8_t* data, std::size_t size) {
  std::string_view bytes(reinterpret_cast<const char*>(data), size);
  pgproxy::upstream::LoginProbe probe("health", "secret", "postgres");
  std::size_t chunk = size > 0 ? 1 + data[0] % 11 : 1;
  for (std::size_t i = 0; i < size; i += chunk) {
    auto step = probe.feed(bytes.substr(i, chunk));
    if (step.kind != pgproxy::upstream::LoginProbe::Step::kContinue) {
      break;
    }
  }
  pgproxy::auth::ScramClient scram("secret", "abc");
  if (scram.clientFinal(bytes).ok()) {
    (void)scram.verifyServerFinal(bytes);
  }
  return 0;
}
