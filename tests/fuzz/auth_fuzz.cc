// Fuzzes client authentication's parsers: the SCRAM server's parsing of what a client sends
// (client-first and client-final messages), stored verifiers and the auth file. No input may
// crash them, and no input may log in without the password.
#include <cstdint>
#include <string>
#include <string_view>

#include "pgproxy/auth/client_auth.h"
#include "pgproxy/auth/scram_server.h"
#include "pgproxy/auth/user_list.h"

extern const char* const kFuzzTargetName = "auth";

namespace {

const pgproxy::auth::ScramVerifier& verifier() {
  static const auto v = pgproxy::auth::ScramVerifier::fromPassword("pw", "saltsaltsaltsalt", 16);
  return v;
}

}  // namespace

extern "C" int LLVMFuzzerTestOneInput(const std::uint8_t* data, std::size_t size) {
  using pgproxy::auth::ScramServer;
  std::string_view in(reinterpret_cast<const char*>(data), size);
  (void)pgproxy::auth::ScramVerifier::parse(in);
  (void)pgproxy::auth::UserList::parse(in, "fuzz");
  // The client's password messages, whole or in two pieces, against each method.
  for (auto type :
       {pgproxy::auth::ClientAuthType::kScramSha256, pgproxy::auth::ClientAuthType::kMd5}) {
    static const auto plain = *pgproxy::auth::classifySecret("pw");
    pgproxy::auth::ClientAuth a("alice", &plain, {type, "", "mock"});
    (void)a.start();
    std::size_t half = in.size() / 2;
    if (a.feed(in.substr(0, half)).kind == pgproxy::auth::ClientAuth::Step::kContinue) {
      (void)a.feed(in.substr(half));
    }
  }
  // Input: a flags byte (bit 0: PLUS, bit 1: channel binding available), then the
  // client-first-message, a NUL, the client-final-message.
  if (in.empty()) {
    return 0;
  }
  unsigned flags = static_cast<unsigned char>(in[0]);
  in.remove_prefix(1);
  std::size_t nul = in.find('\0');
  std::string_view first = in.substr(0, nul);
  std::string_view final = nul == in.npos ? std::string_view() : in.substr(nul + 1);
  ScramServer s(verifier(), "srvnonce", (flags & 2) ? std::string(32, 'h') : std::string());
  auto step = s.clientFirst((flags & 1) ? "SCRAM-SHA-256-PLUS" : "SCRAM-SHA-256", first);
  if (step.result != ScramServer::Result::kContinue) {
    return 0;
  }
  // A fuzzer cannot find a proof for a password it does not know: success means a broken check.
  if (s.clientFinal(final).result == ScramServer::Result::kOk) {
    __builtin_trap();
  }
  return 0;
}
