#pragma once

// SASLprep (RFC 4013), as PostgreSQL applies it to SCRAM passwords (src/common/saslprep.c, used
// by the server when it stores a verifier and by libpq when it logs in). pgproxy needs the same
// bytes where it turns a password into SCRAM keys: a verifier made from a password of the auth
// file, and its own SCRAM login to a backend with a password.
//
// The tables (RFC 3454) and the NFKC normalization come from libidn's stringprep, the standard
// implementation; the steps are taken in PostgreSQL's order, which differs from a plain
// stringprep profile in one way that changes results: PostgreSQL checks prohibited characters
// and the bidirectional rule on the mapped input, before normalization, not on the normalized
// output (a Hebrew presentation form with a point, U+FB2A, normalizes to a letter and a
// non-spacing mark, which a profile would refuse as the last character and PostgreSQL does not).
// One difference remains: libidn normalizes with Unicode 3.2's tables (as RFC 3454 says) and
// PostgreSQL with its current Unicode version; they agree on every character Unicode 3.2 assigned
// except the few whose decompositions later corrigenda corrected, and both refuse characters
// Unicode 3.2 did not assign.

#include <string>
#include <string_view>

namespace pgproxy::auth {

enum class SaslPrepResult {
  kOk,           // `output` is the prepared string
  kInvalidUtf8,  // not UTF-8: SASLprep does not apply
  kProhibited,   // a prohibited or unassigned character, a bidi violation, or nothing left
};

// PostgreSQL's pg_saslprep: pure ASCII comes back unchanged (kOk, even with control
// characters); otherwise the RFC 4013 steps. `output` is set only on kOk.
SaslPrepResult saslPrep(std::string_view input, std::string& output);

// The bytes SCRAM derives its keys from, as PostgreSQL does: the SASLprep'd password, or the
// password as given when SASLprep does not apply (invalid UTF-8, a prohibited character).
std::string scramPassword(std::string_view password);

}  // namespace pgproxy::auth
