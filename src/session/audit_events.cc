// The audit log's events for a session (audit/audit.h): what a security team asks of a proxy in
// front of its databases. Each function writes nothing unless audit is on, and costs a session
// nothing then beyond the check.
#include <openssl/bio.h>
#include <openssl/ssl.h>
#include <openssl/x509.h>

#include <bit>

#include "pgproxy/audit/audit.h"
#include "pgproxy/base/clock.h"
#include "pgproxy/log/log.h"
#include "pgproxy/net/cidr.h"
#include "pgproxy/proto/redact.h"
#include "pgproxy/route/startup_route.h"
#include "pgproxy/session/session.h"
#include "pgproxy/sql/audit_class.h"

namespace pgproxy::session {
namespace {

const char* roleName(config::BackendRole r) {
  switch (r) {
    case config::BackendRole::kAny:
      return "any";
    case config::BackendRole::kPrimary:
      return "primary";
    case config::BackendRole::kStandby:
      return "standby";
  }
  return "any";
}

const char* balanceName(config::Balance b) {
  switch (b) {
    case config::Balance::kRoundRobin:
      return "round_robin";
    case config::Balance::kLeastConn:
      return "least_conn";
    case config::Balance::kRandom:
      return "random";
    case config::Balance::kFirst:
      return "first";
  }
  return "round_robin";
}

const char* authMethodName(auth::ClientAuthType t) {
  switch (t) {
    case auth::ClientAuthType::kScramSha256:
      return "scram-sha-256";
    case auth::ClientAuthType::kMd5:
      return "md5";
    case auth::ClientAuthType::kTrust:
      return "trust";
    case auth::ClientAuthType::kCert:
      return "cert";
  }
  return "scram-sha-256";
}

// The client certificate's subject as RFC 2253 text ("CN=alice,O=Example"), empty when none.
std::string certificateSubject(SSL* ssl) {
  X509* cert = SSL_get1_peer_certificate(ssl);
  if (!cert) {
    return {};
  }
  std::string out;
  if (BIO* bio = BIO_new(BIO_s_mem())) {
    if (X509_NAME_print_ex(bio, X509_get_subject_name(cert), 0, XN_FLAG_RFC2253) >= 0) {
      char* data = nullptr;
      long len = BIO_get_mem_data(bio, &data);
      if (data && len > 0) {
        out.assign(data, static_cast<std::size_t>(len));
      }
    }
    BIO_free(bio);
  }
  X509_free(cert);
  return out;
}

}  // namespace

Session::Taps& Session::taps() {
  if (!taps_) {
    taps_ = std::make_unique<Taps>();
  }
  return *taps_;
}

void Session::auditFields(audit::Event& e) const {
  e.number("session", id_).text("client", peer()).text("mode", modeName());
  if (!sni_.empty()) {
    e.text("sni", sni_);
  }
  if (mapping_ != SIZE_MAX) {
    e.text("mapping", ctx_.config->mappings[mapping_].external);
  }
  if (taps_ && !taps_->user.empty()) {
    e.text("user", taps_->user).text("database", taps_->database);
  }
}

void Session::auditConnect() {
  if (!audit::enabled() || (taps_ && taps_->connected)) {
    return;
  }
  audit::Event e("connect");
  auditFields(e);
  if (terminated()) {
    e.text("tls", "terminated")
        .text("tls_version", SSL_get_version(client_ssl_))
        .text("tls_cipher", SSL_get_cipher_name(client_ssl_));
    if (std::string subject = certificateSubject(client_ssl_); !subject.empty()) {
      e.text("client_certificate", subject);
    }
  } else {
    e.text("tls", mode_ == Mode::kPlaintext ? "none" : "passthrough");
  }
  audit::emit(e);
  taps().connected = true;
}

void Session::auditStartup(const proto::StartupParams& params) {
  if (!audit::enabled() && !ctx_.plugins) {
    return;  // kept only for those who read it
  }
  Taps& t = taps();
  t.user = params.get("user");
  t.database = params.get("database");
  if (t.database.empty()) {
    t.database = t.user;  // PostgreSQL's default
  }
}

void Session::auditAuth(bool ok, std::string_view detail) {
  if (!audit::enabled()) {
    return;
  }
  audit::Event e("auth");
  auditFields(e);
  e.text("method", authMethodName(ctx_.config->auth.type)).text("result", ok ? "ok" : "failed");
  if (!ok && !detail.empty()) {
    e.text("reason", detail);
  }
  if (console_wanted_) {
    e.flag("console", true);
  }
  audit::emit(e);
}

void Session::auditRoute(std::string_view target, std::string_view reason) {
  if (!audit::enabled()) {
    return;
  }
  audit::Event e("route");
  auditFields(e);
  e.text("backend", target).text("reason", reason);
  audit::emit(e);
}

std::string Session::routeReason() const {
  const auto& m = ctx_.config->mappings[mapping_];
  std::string r = sni_.empty() ? "default mapping" : "server name";
  if (templated_) {
    r += ", backend named after the server name";
  } else {
    std::uint64_t all = m.backends.size() >= 64 ? ~0ull : (1ull << m.backends.size()) - 1;
    r += std::string(", ") + balanceName(m.balance) + " among " +
         std::to_string(std::popcount(route_backends_ & all)) + " backend(s)";
  }
  if (!m.routes.empty() && route_backends_ != route::ownBackends(m)) {
    r += ", a route matched the startup parameters";
  }
  if (role_ != config::BackendRole::kAny) {
    r += std::string(", role ") + roleName(role_);
  }
  if (prefer_standby_) {
    r += ", standby preferred";
  }
  if (int tries = std::popcount(tried_); tries > 1) {
    r += ", after " + std::to_string(tries - 1) + " backend(s) failed";
  }
  return r;
}

void Session::auditRefuse(Outcome why, const char* sqlstate, std::string_view message,
                          int tls_alert) {
  if (!audit::enabled()) {
    return;
  }
  audit::Event e("refuse");
  auditFields(e);
  e.text("outcome", metrics::outcomeName(why)).text("reason", message);
  if (sqlstate) {
    e.text("sqlstate", sqlstate);
  }
  if (tls_alert >= 0) {
    e.number("tls_alert", static_cast<std::uint64_t>(tls_alert));
  }
  audit::emit(e);
}

void Session::auditDeniedAtAccept(const sockaddr* addr, const char* why) {
  if (!audit::enabled()) {
    return;
  }
  audit::Event e("refuse");
  e.text("client", net::formatAddress(addr))
      .text("outcome", metrics::outcomeName(Outcome::kDenied))
      .text("reason", why);
  audit::emit(e);
}

void Session::auditDisconnect(Outcome why) {
  if (!taps_ || !taps_->connected || !audit::enabled()) {
    return;
  }
  audit::Event e("disconnect");
  auditFields(e);
  if (tried_) {
    e.text("backend", backend().key());
  }
  e.number("duration_ms", (base::monotonicUs() - started_us_) / 1000)
      .number("bytes_up", bytes_up_)
      .number("bytes_down", bytes_down_)
      .text("outcome", metrics::outcomeName(why));
  audit::emit(e);
}

void Session::auditStatement(char type, std::uint32_t length, std::string_view body) {
  if (!audit::enabled()) {
    return;
  }
  const config::AuditConfig& settings = audit::settings();
  if (settings.statements == config::AuditStatements::kNone) {
    return;
  }
  // A Parse body is "name\0query\0types"; a Query's is "query\0".
  std::string_view name;
  if (type == 'P') {
    std::size_t nul = body.find('\0');
    name = body.substr(0, nul == std::string_view::npos ? body.size() : nul);
    body.remove_prefix(nul == std::string_view::npos ? body.size() : nul + 1);
  }
  std::size_t nul = body.find('\0');
  bool cut = nul == std::string_view::npos && length > 4 + body.size();
  std::string_view sql = body.substr(0, nul == std::string_view::npos ? body.size() : nul);
  sql::AuditClass c = sql::auditClass(sql);
  bool wanted =
      settings.statements == config::AuditStatements::kAll ||
      (settings.statements == config::AuditStatements::kWrite && c != sql::AuditClass::kRead) ||
      (settings.statements == config::AuditStatements::kDdl && c == sql::AuditClass::kDdl);
  if (!wanted) {
    return;
  }
  audit::Event e("statement");
  if (sql.size() > audit::kMaxStatement) {
    sql = sql.substr(0, audit::kMaxStatement);
    cut = true;
  }
  if (cut) {
    e.markTruncated();
  }
  auditFields(e);
  e.text("protocol", type == 'Q' ? "simple" : "extended");
  if (type == 'P') {
    e.text("statement_name", name);
  }
  e.text("class", sql::auditClassName(c))
      .text("sql",
            settings.redact_literals ? proto::redactLiterals(sql) : proto::redactPasswords(sql),
            audit::kMaxStatementField);
  audit::emit(e);
}

bool Session::auditAdmits() {
  if (audit::accepting()) {
    return true;
  }
  failSession(Outcome::kAuditUnavailable,
              "pgproxy cannot write its audit log, and audit.fail is closed: new sessions are "
              "refused until it can",
              proto::sqlstate::kIoError);
  return false;
}

}  // namespace pgproxy::session
