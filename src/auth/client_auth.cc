#include "pgproxy/auth/client_auth.h"

#include <openssl/rand.h>

#include "pgproxy/auth/scram_common.h"
#include "pgproxy/proto/wire.h"

namespace pgproxy::auth {
namespace {

std::string authRequest(std::uint32_t code, std::string_view data) {
  std::string body;
  proto::appendU32(body, code);
  body.append(data);
  return proto::buildMessage('R', body);
}

bool runsScram(ClientAuthType type, const UserSecret* secret) {
  if (type == ClientAuthType::kScramSha256) {
    return true;
  }
  // PostgreSQL: an md5 method with a SCRAM secret runs SCRAM.
  return type == ClientAuthType::kMd5 && secret && secret->kind == UserSecret::Kind::kScram;
}

ScramServer makeScram(std::string_view user, const UserSecret* secret,
                      const ClientAuth::Settings& s) {
  if (!runsScram(s.type, secret) || !secret || secret->kind == UserSecret::Kind::kMd5) {
    // Unknown users, and md5 hashes that SCRAM cannot check: a whole exchange that fails.
    return ScramServer::mock(user, s.mock_secret, randomNonce(), s.channel_binding);
  }
  if (secret->kind == UserSecret::Kind::kScram) {
    return ScramServer(secret->verifier, randomNonce(), s.channel_binding);
  }
  unsigned char salt[16];
  RAND_bytes(salt, sizeof(salt));
  return ScramServer(
      ScramVerifier::fromPassword(secret->text, std::string(reinterpret_cast<char*>(salt), 16)),
      randomNonce(), s.channel_binding);
}

}  // namespace

ClientAuth::ClientAuth(std::string user, const UserSecret* secret, Settings settings)
    : user_(std::move(user)),
      secret_(secret),
      settings_(std::move(settings)),
      scram_(makeScram(user_, secret_, settings_)) {}

ClientAuth::ClientAuth(std::string user, std::shared_ptr<const UserSecret> secret,
                       Settings settings)
    : user_(std::move(user)),
      owned_(std::move(secret)),
      secret_(owned_.get()),
      settings_(std::move(settings)),
      scram_(makeScram(user_, secret_, settings_)) {}

ClientAuth::Step ClientAuth::checkCertificate(std::string_view user,
                                              const ClientCertificate& cert) {
  Step s;
  if (!cert.present || !cert.verified) {
    s.kind = Step::kFailed;
    s.send = proto::buildFatal(proto::sqlstate::kInvalidAuthorization,
                               "connection requires a valid client certificate");
    s.log = !cert.present ? "auth.type cert: the client presented no certificate"
                          : "auth.type cert: the client's certificate did not verify against "
                            "auth.client_ca: " +
                                cert.why;
    return s;
  }
  // PostgreSQL compares the CN with the user name byte for byte (no case folding); an empty CN
  // (absent, or refused for an embedded NUL) matches nobody, since a startup user is never empty.
  if (cert.common_name.empty() || cert.common_name != user) {
    s.kind = Step::kFailed;
    s.send = proto::buildFatal(
        proto::sqlstate::kInvalidAuthorization,
        "certificate authentication failed for user \"" + std::string(user) + "\"");
    s.log = "auth.type cert: provided user name (" + std::string(user) +
            ") and the certificate's common name (" +
            (cert.common_name.empty() ? "none" : cert.common_name) + ") do not match";
    return s;
  }
  s.kind = Step::kOk;
  return s;
}

ClientAuth::Step ClientAuth::start() {
  Step s;
  if (settings_.type == ClientAuthType::kCert) {
    phase_ = Phase::kDone;
    return checkCertificate(user_, settings_.certificate);
  }
  if (settings_.type == ClientAuthType::kTrust) {
    phase_ = Phase::kDone;
    s.kind = Step::kOk;
    return s;
  }
  use_scram_ = runsScram(settings_.type, secret_);
  if (use_scram_) {
    std::string mechanisms;
    if (scram_.offersPlus()) {
      mechanisms += std::string("SCRAM-SHA-256-PLUS") + '\0';
    }
    mechanisms += std::string("SCRAM-SHA-256") + '\0' + '\0';
    s.send = authRequest(10, mechanisms);
    phase_ = Phase::kScramFirst;
    return s;
  }
  unsigned char salt[4];
  RAND_bytes(salt, sizeof(salt));
  md5_salt_.assign(reinterpret_cast<char*>(salt), sizeof(salt));
  s.send = authRequest(5, md5_salt_);
  phase_ = Phase::kMd5;
  return s;
}

ClientAuth::Step ClientAuth::fail() {
  phase_ = Phase::kDone;
  Step s;
  s.kind = Step::kFailed;
  s.send = proto::buildFatal(proto::sqlstate::kInvalidPassword,
                             "password authentication failed for user \"" + user_ + "\"");
  s.log = !secret_ ? settings_.unknown_user
          : secret_->kind == UserSecret::Kind::kMd5 && use_scram_
              ? "the user has an md5 secret, which cannot check a SCRAM exchange"
              : "wrong password";
  return s;
}

ClientAuth::Step ClientAuth::protocolError(const std::string& why) {
  phase_ = Phase::kDone;
  Step s;
  s.kind = Step::kFailed;
  s.send = proto::buildFatal(proto::sqlstate::kProtocolViolation, why);
  s.log = why;
  return s;
}

ClientAuth::Step ClientAuth::feed(std::string_view bytes) {
  pending_.append(bytes);
  if (pending_.size() < 5) {
    return {};
  }
  if (pending_[0] != 'p') {
    return protocolError("expected password response, got message type " +
                         std::to_string(static_cast<unsigned char>(pending_[0])));
  }
  std::uint32_t len = proto::readU32(pending_.data() + 1);
  if (len < 4 || len > kMaxMessage) {
    return protocolError("invalid message length");
  }
  if (pending_.size() < 1 + static_cast<std::size_t>(len)) {
    return {};
  }
  if (pending_.size() > 1 + static_cast<std::size_t>(len)) {
    // The client must wait for our answer before it says more.
    return protocolError("unexpected data after a password response");
  }
  std::string message = std::move(pending_);
  pending_.clear();
  return onMessage(std::string_view(message).substr(5));
}

ClientAuth::Step ClientAuth::onMessage(std::string_view body) {
  Step s;
  switch (phase_) {
    case Phase::kMd5: {
      if (body.empty() || body.back() != '\0') {
        return protocolError("invalid password packet");
      }
      std::string_view answer = body.substr(0, body.size() - 1);
      std::string expected;
      if (secret_ && secret_->kind == UserSecret::Kind::kPlain) {
        expected = md5Password(user_, secret_->text, md5_salt_);
      } else if (secret_ && secret_->kind == UserSecret::Kind::kMd5) {
        expected = md5FromHash(secret_->text, md5_salt_);
      }
      if (expected.empty() || !sameBytes(answer, expected)) {
        return fail();
      }
      phase_ = Phase::kDone;
      s.kind = Step::kOk;
      return s;
    }
    case Phase::kScramFirst: {
      std::size_t nul = body.find('\0');
      if (nul == body.npos || body.size() < nul + 5) {
        return protocolError("malformed SASLInitialResponse message");
      }
      std::string_view mechanism = body.substr(0, nul);
      std::uint32_t n = proto::readU32(body.data() + nul + 1);
      std::string_view data = body.substr(nul + 5);
      if (n != 0xFFFFFFFFu && n != data.size()) {
        return protocolError("malformed SASLInitialResponse message");
      }
      auto step = scram_.clientFirst(mechanism, n == 0xFFFFFFFFu ? "" : data);
      if (step.result != ScramServer::Result::kContinue) {
        return protocolError(step.message);
      }
      phase_ = Phase::kScramFinal;
      s.send = authRequest(11, step.message);
      return s;
    }
    case Phase::kScramFinal: {
      auto step = scram_.clientFinal(body);
      if (step.result == ScramServer::Result::kProtocolError) {
        return protocolError(step.message);
      }
      if (step.result != ScramServer::Result::kOk) {
        return fail();
      }
      phase_ = Phase::kDone;
      s.kind = Step::kOk;
      s.send = authRequest(12, step.message);
      return s;
    }
    case Phase::kStart:
    case Phase::kDone:
      break;
  }
  return protocolError("unexpected password response");
}

ServerCredentials ClientAuth::serverCredentials() const {
  ServerCredentials c;
  if (!secret_) {
    return c;
  }
  switch (secret_->kind) {
    case UserSecret::Kind::kPlain:
      c.kind = ServerCredentials::Kind::kPassword;
      c.password = secret_->text;
      break;
    case UserSecret::Kind::kMd5:
      c.kind = ServerCredentials::Kind::kMd5Hash;
      c.md5_hash = secret_->text;
      break;
    case UserSecret::Kind::kScram:
      if (!scram_.clientKey().empty()) {
        c.kind = ServerCredentials::Kind::kScramKeys;
        c.client_key = scram_.clientKey();
        c.server_key = secret_->verifier.server_key;
        c.salt = secret_->verifier.salt;
        c.iterations = secret_->verifier.iterations;
      }
      break;
  }
  return c;
}

}  // namespace pgproxy::auth
