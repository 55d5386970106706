#include "pgproxy/auth/scram_server.h"

#include <openssl/crypto.h>

#include "pgproxy/auth/saslprep.h"
#include "pgproxy/auth/scram_common.h"
#include "pgproxy/base/text.h"

namespace pgproxy::auth {
namespace {

constexpr std::string_view kPrefix = "SCRAM-SHA-256$";

// PostgreSQL's words for a client that breaks the SCRAM syntax (SQLSTATE 08P01).
ScramServer::Step protocolError(std::string why) {
  return {ScramServer::Result::kProtocolError, std::move(why)};
}

bool printableNonce(std::string_view nonce) {
  for (char c : nonce) {
    if (c < 0x21 || c > 0x7e || c == ',') {
      return false;
    }
  }
  return !nonce.empty();
}

}  // namespace

base::Result<ScramVerifier> ScramVerifier::parse(std::string_view text) {
  base::Error bad{
      "not a SCRAM-SHA-256 verifier (SCRAM-SHA-256$<iterations>:<salt>$<StoredKey>:"
      "<ServerKey>)"};
  if (text.substr(0, kPrefix.size()) != kPrefix) {
    return bad;
  }
  text.remove_prefix(kPrefix.size());
  std::size_t colon1 = text.find(':');
  std::size_t dollar = text.find('$');
  if (colon1 == text.npos || dollar == text.npos || dollar < colon1) {
    return bad;
  }
  std::size_t colon2 = text.find(':', dollar);
  if (colon2 == text.npos) {
    return bad;
  }
  ScramVerifier v;
  auto iterations = base::parseUnsigned(text.substr(0, colon1));
  if (!iterations || *iterations < 1 || *iterations > 100'000'000) {
    return bad;
  }
  v.iterations = static_cast<unsigned>(*iterations);
  if (!base64Decode(text.substr(colon1 + 1, dollar - colon1 - 1), v.salt) || v.salt.empty() ||
      !base64Decode(text.substr(dollar + 1, colon2 - dollar - 1), v.stored_key) ||
      !base64Decode(text.substr(colon2 + 1), v.server_key) || v.stored_key.size() != 32 ||
      v.server_key.size() != 32) {
    return bad;
  }
  return v;
}

ScramVerifier ScramVerifier::fromPassword(std::string_view password, std::string salt,
                                          unsigned iterations) {
  ScramVerifier v;
  v.iterations = iterations;
  // SASLprep'd as PostgreSQL does when it stores a verifier and libpq when it logs in: a client
  // typing the same password proves the same keys.
  std::string prepared = scramPassword(password);
  std::string salted = saltedPassword(prepared, salt, iterations);
  OPENSSL_cleanse(prepared.data(), prepared.size());
  v.salt = std::move(salt);
  v.stored_key = sha256(hmacSha256(salted, "Client Key"));
  v.server_key = hmacSha256(salted, "Server Key");
  OPENSSL_cleanse(salted.data(), salted.size());
  return v;
}

std::string ScramVerifier::text() const {
  return std::string(kPrefix) + std::to_string(iterations) + ":" + base64Encode(salt) + "$" +
         base64Encode(stored_key) + ":" + base64Encode(server_key);
}

ScramServer::ScramServer(ScramVerifier verifier, std::string nonce, std::string channel_binding)
    : verifier_(std::move(verifier)),
      nonce_(std::move(nonce)),
      channel_binding_(std::move(channel_binding)) {}

ScramServer ScramServer::mock(std::string_view user, std::string_view mock_secret,
                              std::string nonce, std::string channel_binding) {
  ScramVerifier v;
  v.iterations = 4096;
  v.salt = sha256(std::string(user) + std::string(mock_secret)).substr(0, 16);
  v.stored_key = sha256(v.salt);  // never matches: no ClientKey hashes to a value we chose
  v.server_key = v.stored_key;
  ScramServer s(std::move(v), std::move(nonce), std::move(channel_binding));
  s.mock_ = true;
  return s;
}

ScramServer::Step ScramServer::clientFirst(std::string_view mechanism,
                                           std::string_view client_first) {
  if (first_done_ || client_first.size() > kMaxMessage) {
    return protocolError("malformed SCRAM message");
  }
  first_done_ = true;
  bool plus = mechanism == "SCRAM-SHA-256-PLUS";
  if (!plus && mechanism != "SCRAM-SHA-256") {
    return protocolError("client selected an invalid SASL authentication mechanism");
  }
  if (plus && channel_binding_.empty()) {
    return protocolError("client selected an invalid SASL authentication mechanism");
  }
  // gs2-header: cbind-flag "," [authzid] ","
  std::size_t c1 = client_first.find(',');
  std::size_t c2 = c1 == client_first.npos ? c1 : client_first.find(',', c1 + 1);
  if (c2 == client_first.npos) {
    return protocolError("malformed SCRAM message (no GS2 header)");
  }
  std::string_view flag = client_first.substr(0, c1);
  std::string_view authzid = client_first.substr(c1 + 1, c2 - c1 - 1);
  if (!authzid.empty()) {
    return protocolError("client uses authorization identity, but it is not supported");
  }
  std::string cbind_data;
  if (flag == "n") {
    if (plus) {
      return protocolError("channel binding is required, but client does not support it");
    }
  } else if (flag == "y") {
    // The client could bind but believes we cannot: a downgrade when we offered PLUS.
    if (!channel_binding_.empty()) {
      return protocolError("SCRAM channel binding negotiation error");
    }
  } else if (flag == "p=tls-server-end-point") {
    if (!plus) {
      return protocolError("channel binding was requested, but the mechanism has no PLUS");
    }
    cbind_data = channel_binding_;
  } else if (flag.substr(0, 2) == "p=") {
    return protocolError("unsupported SCRAM channel-binding type \"" + std::string(flag.substr(2)) +
                         "\"");
  } else {
    return protocolError("malformed SCRAM message (bad GS2 channel-binding flag)");
  }
  cbind_input_ = std::string(client_first.substr(0, c2 + 1)) + cbind_data;
  client_first_bare_ = std::string(client_first.substr(c2 + 1));
  std::string_view m, r;
  if (scramAttribute(client_first_bare_, 'm', m)) {
    return protocolError("client requires an unsupported SCRAM extension");
  }
  if (client_first_bare_.substr(0, 2) != "n=" || !scramAttribute(client_first_bare_, 'r', r) ||
      !printableNonce(r)) {
    return protocolError("malformed SCRAM message (client-first-message)");
  }
  nonce_ = std::string(r) + nonce_;
  server_first_ = "r=" + nonce_ + ",s=" + base64Encode(verifier_.salt) +
                  ",i=" + std::to_string(verifier_.iterations);
  return {Result::kContinue, server_first_};
}

ScramServer::Step ScramServer::clientFinal(std::string_view client_final) {
  if (!first_done_ || server_first_.empty() || client_final.size() > kMaxMessage) {
    return protocolError("malformed SCRAM message");
  }
  std::size_t proof_at = client_final.rfind(",p=");
  if (proof_at == client_final.npos) {
    return protocolError("malformed SCRAM message (no proof)");
  }
  std::string_view without_proof = client_final.substr(0, proof_at);
  std::string_view c, r;
  std::string cbind, proof;
  if (without_proof.substr(0, 2) != "c=" || !scramAttribute(without_proof, 'c', c) ||
      !scramAttribute(without_proof, 'r', r) || !base64Decode(c, cbind) ||
      !base64Decode(client_final.substr(proof_at + 3), proof)) {
    return protocolError("malformed SCRAM message (client-final-message)");
  }
  if (!sameBytes(cbind, cbind_input_)) {
    return protocolError("SCRAM channel binding check failed");
  }
  if (r != nonce_) {
    return protocolError("SCRAM nonce mismatch");
  }
  if (proof.size() != 32) {
    return protocolError("malformed SCRAM message (invalid ClientProof)");
  }
  std::string auth_message =
      client_first_bare_ + "," + server_first_ + "," + std::string(without_proof);
  std::string signature = hmacSha256(verifier_.stored_key, auth_message);
  std::string client_key = xorBytes(proof, signature);
  if (mock_ || !sameBytes(sha256(client_key), verifier_.stored_key)) {
    OPENSSL_cleanse(client_key.data(), client_key.size());
    return {Result::kWrongPassword, "password authentication failed"};
  }
  client_key_ = std::move(client_key);
  return {Result::kOk, "v=" + base64Encode(hmacSha256(verifier_.server_key, auth_message))};
}

}  // namespace pgproxy::auth
