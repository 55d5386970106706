// Fuzzes what a backend can send auth_query's lookup: the reply to the query (SecretReply) and
// the whole exchange from the login on (SecretQuery). No input may crash them, read past a
// message, or hold more than one bounded message; a secret found must be bytes the server sent.
#include <cstdint>
#include <string>
#include <string_view>

#include "pgproxy/auth/secret_lookup.h"

extern const char* const kFuzzTargetName = "secret_lookup";

extern "C" int LLVMFuzzerTestOneInput(const std::uint8_t* data, std::size_t size) {
  using pgproxy::auth::SecretQuery;
  using pgproxy::auth::SecretReply;
  std::string_view bytes(reinterpret_cast<const char*>(data), size);
  // The first byte picks the chunk size, so messages split at every boundary get tried.
  std::size_t chunk = size > 0 ? 1 + data[0] % 13 : 1;
  SecretReply reply;
  for (std::size_t i = 0; i < size; i += chunk) {
    auto step = reply.feed(bytes.substr(i, chunk));
    if (step.kind == SecretReply::Step::kFound && bytes.find(step.secret) == bytes.npos) {
      __builtin_trap();
    }
    if (step.kind != SecretReply::Step::kContinue) {
      break;
    }
  }
  pgproxy::auth::ServerCredentials c;
  c.kind = pgproxy::auth::ServerCredentials::Kind::kPassword;
  c.password = "pw";
  SecretQuery query({"pgproxy_auth", c, "postgres", "SELECT usename, passwd FROM t WHERE u = $1"},
                    "alice");
  std::string send;
  for (std::size_t i = 0; i < size; i += chunk) {
    auto step = query.feed(bytes.substr(i, chunk), send);
    if (step.kind != SecretQuery::Step::kContinue) {
      break;
    }
  }
  return 0;
}
