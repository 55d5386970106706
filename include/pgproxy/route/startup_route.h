#pragma once

#include <cstddef>
#include <cstdint>
#include <string>
#include <string_view>
#include <utility>
#include <vector>

#include "pgproxy/config/config.h"

namespace pgproxy::route {

// Shell-style glob: `*` matches any run of characters (also none), `?` exactly one, everything
// else itself, case-sensitively (PostgreSQL's database and role names are). Linear in the text
// times the pattern at worst, without recursion: patterns come from the config, text from
// clients.
bool globMatch(std::string_view pattern, std::string_view text);

// What a client may ask of the server's role, from target_session_attrs (a startup parameter, or
// `-c target_session_attrs=...` in options). libpq reads it to choose among hosts and does not
// send it; a client that wants pgproxy to choose passes it in options.
enum class SessionAttrs { kAny, kPrimary, kStandby, kPreferStandby };
// false: a value PostgreSQL's libpq does not know.
bool parseSessionAttrs(std::string_view value, SessionAttrs& out);

// Where one session goes, decided once its StartupMessage is in.
struct Decision {
  enum class Kind {
    kRouted,      // `backends` and `role` say where
    kNoDatabase,  // no route matched and the mapping has no backends of its own: 3D000
    kBadAttrs,    // target_session_attrs has a value no client library sends: 22023
  };
  Kind kind = Kind::kRouted;
  std::size_t route = kOwn;    // index into the mapping's routes, or kOwn
  std::uint64_t backends = 0;  // bit i: the mapping's backends[i] may take the session
  config::BackendRole role = config::BackendRole::kAny;
  bool prefer_standby = false;  // kAny role, standbys first (prefer-standby)
  std::string database;         // the database the client asked for (user when empty)
  std::string bad_value;        // kBadAttrs: the value
  // The StartupMessage to send instead of the client's (a rewritten database, target_session_attrs
  // taken out: PostgreSQL refuses it as an unknown parameter); empty: the client's, unchanged.
  std::string startup;
  static constexpr std::size_t kOwn = SIZE_MAX;
};

// The mapping's own backends as a Decision::backends mask (the first own_backends of its list).
std::uint64_t ownBackends(const config::Mapping& m);

// The first route of `m` whose patterns all match the StartupMessage `params`, else the
// mapping's own backends. The role is the route's when it sets one, else the mapping's, and
// target_session_attrs chooses only where the config says `any`. Pure: no I/O (once per
// session, at its handshake).
Decision decide(const config::Mapping& m, std::uint32_t version,
                const std::vector<std::pair<std::string, std::string>>& params);

// A wildcard mapping's backend host for the server name `sni` ("tenant42.db.example.com" under
// "*.db.example.com" gives "tenant42"): `internal` with each "$1" replaced by the label. Empty
// when `sni` has no label to give (no SNI: a plaintext client of a default mapping) or the label
// is not a host name's (letters, digits, hyphens).
std::string expandTemplate(std::string_view internal, std::string_view sni);

}  // namespace pgproxy::route
