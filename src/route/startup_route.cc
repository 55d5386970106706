#include "pgproxy/route/startup_route.h"

#include <algorithm>

#include "pgproxy/base/text.h"
#include "pgproxy/proto/startup.h"

namespace pgproxy::route {

bool globMatch(std::string_view pattern, std::string_view text) {
  // The usual two-cursor walk: on a mismatch after a `*`, that star takes one more character
  // and the rest of the pattern is tried again from there. Only the last star ever needs to
  // grow, so there is no recursion and no exponential case.
  std::size_t p = 0, t = 0;
  std::size_t star = std::string_view::npos, resume = 0;
  while (t < text.size()) {
    if (p < pattern.size() && (pattern[p] == '?' || pattern[p] == text[t])) {
      ++p;
      ++t;
    } else if (p < pattern.size() && pattern[p] == '*') {
      star = p++;
      resume = t;
    } else if (star != std::string_view::npos) {
      p = star + 1;
      t = ++resume;
    } else {
      return false;
    }
  }
  while (p < pattern.size() && pattern[p] == '*') {
    ++p;
  }
  return p == pattern.size();
}

bool parseSessionAttrs(std::string_view value, SessionAttrs& out) {
  if (value == "any") {
    out = SessionAttrs::kAny;
  } else if (value == "read-write" || value == "primary") {
    out = SessionAttrs::kPrimary;
  } else if (value == "read-only" || value == "standby") {
    out = SessionAttrs::kStandby;
  } else if (value == "prefer-standby") {
    out = SessionAttrs::kPreferStandby;
  } else {
    return false;
  }
  return true;
}

namespace {

constexpr std::string_view kAttrs = "target_session_attrs";

// Takes target_session_attrs out of `options`, wherever it is; the last one given wins, as for
// any setting. False when there was none.
bool takeAttrsFromOptions(std::string& options, std::string& attrs) {
  std::vector<std::string> words = proto::splitOptions(options);
  std::vector<std::string> kept;
  bool found = false;
  std::string name, value;
  for (std::size_t i = 0; i < words.size(); ++i) {
    std::string_view setting;
    std::size_t used = proto::optionSetting(words, i, setting);
    if (used > 0 && proto::splitSetting(setting, name, value) && name == kAttrs) {
      attrs = value;
      found = true;
      i += used - 1;
      continue;
    }
    std::size_t take = std::max<std::size_t>(used, 1);
    kept.insert(kept.end(), words.begin() + static_cast<std::ptrdiff_t>(i),
                words.begin() + static_cast<std::ptrdiff_t>(i + take));
    i += take - 1;
  }
  if (found) {
    options = proto::joinOptions(kept);
  }
  return found;
}

bool routeMatches(const config::RouteMatch& match, std::string_view database, std::string_view user,
                  std::string_view application_name) {
  return (match.database.empty() || globMatch(match.database, database)) &&
         (match.user.empty() || globMatch(match.user, user)) &&
         (match.application_name.empty() || globMatch(match.application_name, application_name));
}

}  // namespace

std::uint64_t ownBackends(const config::Mapping& m) {
  return m.own_backends >= 64 ? ~0ull : (1ull << m.own_backends) - 1;
}

Decision decide(const config::Mapping& m, std::uint32_t version,
                const std::vector<std::pair<std::string, std::string>>& params) {
  Decision d;
  std::string user, application_name;
  const std::string* database = nullptr;
  for (const auto& [name, value] : params) {
    if (name == "user") {
      user = value;
    } else if (name == "database") {
      database = &value;
    } else if (name == "application_name") {
      application_name = value;
    }
  }
  // PostgreSQL's default: the database named like the user.
  d.database = database && !database->empty() ? *database : user;

  // target_session_attrs leaves the packet whatever pgproxy does with it.
  std::vector<std::pair<std::string, std::string>> sent = params;
  bool rewrite = false;
  std::string attrs;
  bool have_attrs = false;
  for (auto it = sent.begin(); it != sent.end();) {
    if (it->first == kAttrs) {
      attrs = it->second;
      have_attrs = true;
      rewrite = true;
      it = sent.erase(it);
      continue;
    }
    if (it->first == "options" && takeAttrsFromOptions(it->second, attrs)) {
      have_attrs = true;
      rewrite = true;
      if (it->second.empty()) {
        it = sent.erase(it);
        continue;
      }
    }
    ++it;
  }
  SessionAttrs asked = SessionAttrs::kAny;
  if (have_attrs && !parseSessionAttrs(attrs, asked)) {
    d.kind = Decision::Kind::kBadAttrs;
    d.bad_value = attrs;
    return d;
  }

  const config::Route* route = nullptr;
  for (std::size_t i = 0; i < m.routes.size(); ++i) {
    if (routeMatches(m.routes[i].match, d.database, user, application_name)) {
      route = &m.routes[i];
      d.route = i;
      break;
    }
  }
  if (route && !route->backends.empty()) {
    for (std::size_t b : route->backends) {
      d.backends |= 1ull << b;
    }
  } else if (m.own_backends > 0) {
    d.backends = ownBackends(m);
  } else {
    d.kind = Decision::Kind::kNoDatabase;
    return d;
  }

  d.role = route && route->has_role ? route->role : m.role;
  if (d.role == config::BackendRole::kAny) {
    switch (asked) {
      case SessionAttrs::kAny:
        break;
      case SessionAttrs::kPrimary:
        d.role = config::BackendRole::kPrimary;
        break;
      case SessionAttrs::kStandby:
        d.role = config::BackendRole::kStandby;
        break;
      case SessionAttrs::kPreferStandby:
        d.prefer_standby = true;
        break;
    }
  }

  if (route && !route->database.empty()) {
    bool replaced = false;
    for (auto& [name, value] : sent) {
      if (name == "database") {
        value = route->database;
        replaced = true;
      }
    }
    if (!replaced) {
      sent.emplace_back("database", route->database);
    }
    rewrite = true;
  }
  if (rewrite) {
    d.startup = proto::buildStartup(version, sent);
  }
  return d;
}

std::string expandTemplate(std::string_view internal, std::string_view sni) {
  std::size_t dot = sni.find('.');
  if (sni.empty() || dot == 0 || dot == std::string_view::npos) {
    return {};
  }
  std::string label = base::toLowerAscii(sni.substr(0, dot));
  for (char c : label) {
    // A host name's label and nothing else: the result is looked up in DNS.
    if (!((c >= 'a' && c <= 'z') || (c >= '0' && c <= '9') || c == '-')) {
      return {};
    }
  }
  std::string out;
  for (std::size_t i = 0; i < internal.size(); ++i) {
    if (internal[i] == '$' && i + 1 < internal.size() && internal[i + 1] == '1') {
      out += label;
      ++i;
    } else {
      out += internal[i];
    }
  }
  return out;
}

}  // namespace pgproxy::route
