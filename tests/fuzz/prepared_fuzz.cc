// Fuzzes the prepared statement tracker with a client's message stream and a server's replies
// interleaved as the input says, over two servers: it must never crash, leak a statement
// reference, or emit a broken stream (what it sends either way is whole messages, framed). Half
// the inputs run with the session state as its query hook, driven as the pooled session drives
// it (ReadyForQuery, the advisory lock probe).
#include <cstdint>
#include <string>
#include <string_view>

#include "pgproxy/pool/prepared.h"
#include "pgproxy/pool/session_state.h"
#include "pgproxy/proto/wire.h"

extern const char* const kFuzzTargetName = "prepared";

namespace {

// Whole messages only: a header and a body of the length it says.
bool framed(const std::string& bytes) {
  std::size_t i = 0;
  while (i < bytes.size()) {
    if (bytes.size() - i < 5) {
      return false;
    }
    std::uint32_t len = pgproxy::proto::readU32(bytes.data() + i + 1);
    if (len < 4 || bytes.size() - i - 1 < len) {
      return false;
    }
    i += 1 + len;
  }
  return true;
}

// The input as messages: a type from the protocol's (so the tracker sees its cases, not only
// garbage), then a body length and a body.
std::string message(std::string_view& in, const char* kinds, std::size_t nkinds) {
  if (in.size() < 2) {
    in = {};
    return {};
  }
  char type = kinds[static_cast<unsigned char>(in[0]) % nkinds];
  std::size_t len = static_cast<unsigned char>(in[1]) % 48;
  in.remove_prefix(2);
  len = std::min(len, in.size());
  std::string body(in.substr(0, len));
  in.remove_prefix(len);
  return pgproxy::proto::buildMessage(type, body);
}

}  // namespace

extern "C" int LLVMFuzzerTestOneInput(const std::uint8_t* data, std::size_t size) {
  std::string_view in(reinterpret_cast<const char*>(data), size);
  if (in.size() < 2) {
    return 0;
  }
  std::size_t capacity = static_cast<unsigned char>(in[0]) % 4;  // 0: pass-through
  bool hooked = (static_cast<unsigned char>(in[0]) & 4) != 0;
  in.remove_prefix(1);
  pgproxy::pool::SessionState state({}, false);
  pgproxy::pool::Params client_params, server_params;
  pgproxy::pool::StatementRegistry registry(4096);
  {
    pgproxy::pool::ServerStatements servers[2] = {pgproxy::pool::ServerStatements(registry),
                                                  pgproxy::pool::ServerStatements(registry)};
    pgproxy::pool::PreparedTracker tracker(registry, capacity);
    if (hooked) {
      tracker.setQueryHook(&state);
    }
    int on = 0;
    std::string up, down;
    static const char kClient[] = "PPPBBDDCESSSQHF";
    // 'e': the error of a stale plan, which pgproxy answers by running the batch again.
    static const char kServer[] = "1123nTDCCZZZEEeIsNA";
    while (!in.empty()) {
      char control = in[0];
      in.remove_prefix(1);
      up.clear();
      down.clear();
      switch (static_cast<unsigned char>(control) % 4) {
        case 0:
        case 1: {
          std::string m = message(in, kClient, sizeof(kClient) - 1);
          if (!tracker.fromClient(m, servers[on], up, down)) {
            in = {};
          }
          break;
        }
        case 2: {
          std::string m = message(in, kServer, sizeof(kServer) - 1);
          if (!m.empty() && m[0] == 'e') {
            static const std::string kStale(
                "SERROR\0C0A000\0Mcached plan must not change result type\0\0", 56);
            m = pgproxy::proto::buildMessage('E', kStale);
          }
          if (hooked && !m.empty() && m[0] == 'Z' && !tracker.ownReadyNext()) {
            char status = m.size() > 5 ? m[5] : 'I';
            (void)state.ready(status, client_params, server_params);
            if (const char* probe = state.takeProbe()) {
              tracker.ownQuery(probe, up);
            }
          }
          if (!tracker.fromServer(m, &servers[on], up, down)) {
            in = {};
          }
          break;
        }
        default:
          if (tracker.pending() == 0) {
            on ^= 1;  // between transactions the client may get the other server
          }
          break;
      }
      if (!framed(up) || !framed(down)) {
        __builtin_trap();
      }
    }
  }
  if (registry.size() != 0) {
    __builtin_trap();  // a reference leaked (or was dropped twice and the count went wrong)
  }
  return 0;
}
