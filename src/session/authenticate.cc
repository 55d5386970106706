// authenticate: true: pgproxy authenticates the client itself (the `auth` block: SCRAM-SHA-256
// with channel binding on terminated TLS, md5, trust, or cert: the client certificate of a
// terminated session), then logs in to the backend for it with
// what the exchange yielded (a password, an md5 hash, or the client's recovered SCRAM ClientKey),
// and hands the client the backend's greeting before the splice starts. The client's password
// messages never reach the backend and the backend's authentication requests never reach the
// client. Both exchanges run on the raw sockets, through TLS where pgproxy terminates it.
#include <event2/bufferevent.h>
#include <event2/event.h>
#include <openssl/rand.h>
#include <sys/socket.h>

#include <cerrno>
#include <string_view>

#include "pgproxy/base/text.h"
#include "pgproxy/log/log.h"
#include "pgproxy/net/stream_io.h"
#include "pgproxy/session/session.h"

namespace pgproxy::session {
namespace {

// The salt of mock SCRAM exchanges for unknown users: random per process, stable within it, so
// that an unknown user sees the same salt on every attempt, as a real one does.
const std::string& mockSecret() {
  static const std::string secret = [] {
    unsigned char bytes[16];
    RAND_bytes(bytes, sizeof(bytes));
    return std::string(reinterpret_cast<char*>(bytes), sizeof(bytes));
  }();
  return secret;
}

// The user the StartupMessage at the start of `startup` names (acceptStartup checked it); what
// follows the packet is bytes of a client that did not wait for us.
std::string startupUser(std::string_view startup) {
  proto::Preamble pre = proto::classifyPreamble(startup);
  proto::StartupParams params;
  (void)proto::parseStartup(startup.substr(0, pre.consumed), params);
  return params.get("user");
}

}  // namespace

using net::wouldBlock;

auth::ClientCertificate Session::clientCertificate() const {
  // A plaintext client has no certificate to show.
  return terminated() ? tls::clientCertificate(client_ssl_) : auth::ClientCertificate{};
}

void Session::takeClientSocket() {
  std::string unsent;
  if (client_) {  // plaintext: the StartupMessage is still in the bufferevent
    client_fd_ = detach(client_, startup_, unsent);
    client_ = nullptr;
  }
  watchSockets();
  to_client_ += unsent;
}

void Session::startClientAuth() {
  takeClientSocket();
  const std::string user = startupUser(startup_);
  const auto& cfg = ctx_.config->auth;
  const auth::UserSecret* secret = cfg.users ? cfg.users->find(user) : nullptr;
  // auth.type cert: a client whose certificate is refused is refused before auth.query asks a
  // backend anything for it (beginClientAuth's ClientAuth says why).
  bool refused_cert = cfg.type == auth::ClientAuthType::kCert &&
                      auth::ClientAuth::checkCertificate(user, clientCertificate()).kind !=
                          auth::ClientAuth::Step::kOk;
  // The console's users are the auth file's: auth.query asks a mapping's backend, and the
  // console belongs to none.
  if (secret || !ctx_.secrets || refused_cert || console_wanted_) {
    beginClientAuth(secret, nullptr);
    return;
  }
  // auth.query: users of the file are never looked up; the others wait for their secret. The
  // client hears nothing meanwhile (it has nothing to say before our first request either), so
  // its socket is not watched; handshake_timeout bounds the wait.
  secret_wait_ = std::make_unique<auth::SecretWait>();
  secret_wait_->done = onSecretAnswer;
  secret_wait_->owner = this;
  auth::SecretAnswer answer;
  if (!ctx_.secrets->lookup(mapping_, route_backends_, user, *secret_wait_, answer)) {
    setState(State::kSecretLookup);
    return;
  }
  secret_wait_.reset();
  onSecretAnswer(this, std::move(answer));
}

void Session::onSecretAnswer(void* arg, auth::SecretAnswer answer) {
  auto* s = static_cast<Session*>(arg);
  s->secret_wait_.reset();
  switch (answer.kind) {
    case auth::SecretAnswer::Kind::kFound:
      s->beginClientAuth(nullptr, std::move(answer.secret));
      return;
    case auth::SecretAnswer::Kind::kAbsent:
      // An unknown user: the same mock exchange and refusal as one missing from the file.
      s->beginClientAuth(nullptr, nullptr);
      return;
    case auth::SecretAnswer::Kind::kFailed:
      // By value: two copies of a literal need not share an address (ASan keeps them apart).
      s->secretLookupFailed(answer.error, answer.sqlstate,
                            answer.sqlstate && std::string_view(answer.sqlstate) ==
                                                   proto::sqlstate::kConnectionFailure
                                ? Outcome::kBackendUnreachable
                                : Outcome::kAuthFailed);
      return;
  }
}

void Session::secretLookupFailed(const std::string& why, const char* sqlstate, Outcome outcome) {
  const std::string user = startupUser(startup_);
  LOG_WARN("session %llu: pgproxy could not look up the secret of user \"%s\" for %s: %s",
           static_cast<unsigned long long>(id_), user.c_str(), peer().c_str(), why.c_str());
  // The reason stays in the log: it names backends and auth.user, which are none of an
  // unauthenticated client's business.
  sendLastWords(outcome,
                proto::buildFatal(sqlstate, "pgproxy could not look up the secret of user \"" +
                                                user + "\" (auth.query); see pgproxy's log"));
}

void Session::beginClientAuth(const auth::UserSecret* secret,
                              std::shared_ptr<const auth::UserSecret> looked_up) {
  proto::Preamble pre = proto::classifyPreamble(startup_);
  std::string early = startup_.substr(pre.consumed);  // a client that did not wait for us
  startup_.resize(pre.consumed);
  proto::StartupParams params;
  (void)proto::parseStartup(startup_, params);  // acceptStartup checked it
  std::string user = params.get("user");
  const auto& cfg = ctx_.config->auth;
  auth::ClientAuth::Settings settings;
  settings.type = cfg.type;
  settings.channel_binding = terminated() ? tls::serverEndPointHash(client_ssl_) : "";
  settings.mock_secret = mockSecret();
  if (cfg.type == auth::ClientAuthType::kCert) {
    settings.certificate = clientCertificate();
  }
  if (ctx_.secrets) {
    settings.unknown_user = "no such user in the auth file or by auth.query";
  }
  client_auth_ =
      looked_up ? std::make_unique<auth::ClientAuth>(std::move(user), std::move(looked_up),
                                                     std::move(settings))
                : std::make_unique<auth::ClientAuth>(std::move(user), secret, std::move(settings));
  setState(State::kClientAuth);
  if (!onClientAuthStep(client_auth_->start())) {
    return;
  }
  if (!early.empty() && !onClientAuthStep(client_auth_->feed(early))) {
    return;
  }
  if (state_ == State::kClientAuth) {
    event_add(client_read_, nullptr);
  }
}

bool Session::onClientAuthStep(auth::ClientAuth::Step step) {
  switch (step.kind) {
    case auth::ClientAuth::Step::kContinue:
      to_client_ += step.send;
      return flushLogin(true);
    case auth::ClientAuth::Step::kFailed:
      LOG_INFO("session %llu: authentication of %s failed: %s",
               static_cast<unsigned long long>(id_), peer().c_str(), step.log.c_str());
      auditAuth(false, step.log);
      sendLastWords(Outcome::kAuthFailed, std::move(step.send));
      return false;
    case auth::ClientAuth::Step::kOk:
      auditAuth(true, {});
      break;
  }
  // The client is who it says: the backend login runs with what the exchange yielded, and the
  // client hears nothing more until the backend has accepted it.
  to_client_ += step.send;  // AuthenticationSASLFinal after SCRAM
  if (console_wanted_) {
    authenticated_ = true;
    event_del(client_read_);
    if (flushLogin(true)) {
      enterConsole();
    }
    return false;
  }
  if (ctx_.config->mappings[mapping_].pool.enabled) {
    authenticated_ = true;
    event_del(client_read_);
    if (flushLogin(true)) {
      startPooled();
    }
    return false;
  }
  server_login_ =
      std::make_unique<auth::ServerLogin>(client_auth_->user(), client_auth_->serverCredentials());
  client_auth_.reset();
  authenticated_ = true;
  event_del(client_read_);
  if (!flushLogin(true)) {
    return false;
  }
  connectBackend();
  return false;  // the session moved on (or was closed): the caller stops
}

void Session::readClientAuth() {
  char buf[4096];
  for (;;) {
    int err = 0;
    ssize_t n = readSide(true, buf, sizeof(buf), err);
    if (n == 0 || (n < 0 && !wouldBlock(err) && err != EINTR)) {
      close(Outcome::kClientClosedEarly);
      return;
    }
    if (n < 0) {
      return;  // the read event is armed
    }
    if (!onClientAuthStep(client_auth_->feed(std::string_view(buf, static_cast<std::size_t>(n))))) {
      return;
    }
  }
}

bool Session::flushLogin(bool to_client) {
  int err = 0;
  if (writePending(to_client, err) != WriteResult::kFailed) {
    return true;
  }
  if (to_client) {
    close(Outcome::kClientClosedEarly);
  } else {
    serverLoginFailed("the backend closed the connection during the login", "");
  }
  return false;
}

void Session::backendReady() {
  if (authenticated_) {
    startServerLogin();
  } else {
    startSplice();
  }
}

void Session::startServerLogin() {
  if (backend_) {
    std::string unread, unsent;  // both empty: nothing was exchanged on a plaintext backend yet
    backend_fd_ = detach(backend_, unread, unsent);
    backend_ = nullptr;
  }
  setState(State::kServerLogin);
  armTimer(ctx_.config->connect_timeout_ms);
  watchSockets();
  // The client's own StartupMessage (user, database, options, application_name ...), unchanged.
  to_backend_ = std::move(startup_);
  startup_.clear();
  if (!flushLogin(false)) {
    return;
  }
  event_add(backend_read_, nullptr);
}

void Session::readServerLogin() {
  char buf[4096];
  for (;;) {
    int err = 0;
    ssize_t n = readSide(false, buf, sizeof(buf), err);
    if (n == 0 || (n < 0 && !wouldBlock(err) && err != EINTR)) {
      serverLoginFailed(
          n == 0 ? "the backend closed the connection during the login"
                 : "the backend connection failed during the login: " + base::errnoText(err),
          "");
      return;
    }
    if (n < 0) {
      return;
    }
    auth::ServerLogin::Step step =
        server_login_->feed(std::string_view(buf, static_cast<std::size_t>(n)));
    to_backend_ += step.send;
    if (step.kind == auth::ServerLogin::Step::kFailed) {
      serverLoginFailed(step.error, std::move(step.response));
      return;
    }
    if (!flushLogin(false)) {
      return;
    }
    if (step.kind == auth::ServerLogin::Step::kReady) {
      // The client gets AuthenticationOk and the backend's greeting (ParameterStatus,
      // BackendKeyData, ReadyForQuery), which the splice's key scanner also reads.
      std::string first("R\0\0\0\x08\0\0\0\0", 9);
      first += server_login_->greeting();
      first += server_login_->takeLeftover();
      server_login_.reset();
      startSplice(std::move(first));
      return;
    }
  }
}

void Session::serverLoginFailed(const std::string& why, std::string response) {
  const std::string key = backend().key();
  LOG_WARN("session %llu: pgproxy could not log in to backend %s for %s: %s",
           static_cast<unsigned long long>(id_), key.c_str(), peer().c_str(), why.c_str());
  server_login_.reset();
  if (response.empty()) {
    // Not the backend's own refusal (it would be relayed as it is): say what pgproxy lacks.
    response = proto::buildFatal(proto::sqlstate::kInvalidAuthorization,
                                 "pgproxy could not log in to the backend for this user: " + why);
  }
  sendLastWords(Outcome::kAuthFailed, std::move(response));
}

}  // namespace pgproxy::session
