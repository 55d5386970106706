#include "pgproxy/pool/params.h"

#include <strings.h>

#include <algorithm>
#include <array>

#include "pgproxy/proto/startup.h"
#include "pgproxy/proto/wire.h"

namespace pgproxy::pool {
namespace {

bool sameName(std::string_view a, std::string_view b) {
  return a.size() == b.size() && strncasecmp(a.data(), b.data(), a.size()) == 0;
}

// A string literal that means `s` whatever standard_conforming_strings is on the server.
void appendLiteral(std::string& out, std::string_view s) {
  out += "E'";
  for (char c : s) {
    if (c == '\'' || c == '\\') {
      out += c;
    }
    out += c;
  }
  out += '\'';
}

}  // namespace

void Params::set(std::string_view name, std::string_view value) {
  for (auto& e : entries_) {
    if (sameName(e.first, name)) {
      e.second.assign(value);
      return;
    }
  }
  entries_.emplace_back(std::string(name), std::string(value));
}

void Params::remove(std::string_view name) {
  entries_.erase(std::remove_if(entries_.begin(), entries_.end(),
                                [&](const Entry& e) { return sameName(e.first, name); }),
                 entries_.end());
}

const std::string* Params::get(std::string_view name) const {
  for (const auto& e : entries_) {
    if (sameName(e.first, name)) {
      return &e.second;
    }
  }
  return nullptr;
}

namespace {
// GUC_REPORT parameters a session may change (server_version, is_superuser and the like are
// reported too, but are the server's, not the client's).
constexpr std::array<std::string_view, 8> kReportedSettable = {
    "application_name", "client_encoding",
    "DateStyle",        "IntervalStyle",
    "TimeZone",         "standard_conforming_strings",
    "search_path",      "default_transaction_read_only",
};
}  // namespace

bool isReportedSettable(std::string_view name) {
  return std::any_of(kReportedSettable.begin(), kReportedSettable.end(),
                     [&](std::string_view n) { return sameName(n, name); });
}

bool sameReportedSettable(const Params& a, const Params& b) {
  return std::all_of(kReportedSettable.begin(), kReportedSettable.end(), [&](std::string_view n) {
    const std::string* x = a.get(n);
    const std::string* y = b.get(n);
    return x == y || (x && y && *x == *y);
  });
}

bool parseParameterStatus(std::string_view body, std::string_view& name, std::string_view& value) {
  std::size_t a = body.find('\0');
  if (a == std::string_view::npos) {
    return false;
  }
  std::size_t b = body.find('\0', a + 1);
  if (b == std::string_view::npos || b + 1 != body.size() || a == 0) {
    return false;
  }
  name = body.substr(0, a);
  value = body.substr(a + 1, b - a - 1);
  return true;
}

std::string buildParameterStatus(std::string_view name, std::string_view value) {
  std::string body;
  body.reserve(name.size() + value.size() + 2);
  body.append(name);
  body += '\0';
  body.append(value);
  body += '\0';
  return proto::buildMessage('S', body);
}

std::string splitStartup(const std::vector<std::pair<std::string, std::string>>& params,
                         StartupSplit& out) {
  for (const auto& [name, value] : params) {
    if (name == "user") {
      out.user = value;
    } else if (name == "database") {
      out.database = value;
    } else if (name == "replication") {
      if (value != "false" && value != "off" && value != "no" && value != "0") {
        return "replication connections cannot go through a pool";
      }
    } else if (name == "options") {
      std::vector<std::string> words = proto::splitOptions(value);
      std::string n, v;
      for (std::size_t i = 0; i < words.size(); ++i) {
        std::string_view setting;
        std::size_t used = proto::optionSetting(words, i, setting);
        if (used == 0) {
          return "options \"" + words[i] +
                 "\" cannot be honoured by a pool; only -c name=value and --name=value can";
        }
        i += used - 1;
        if (!proto::splitSetting(setting, n, v)) {
          return "options \"" + std::string(setting) + "\" is not name=value";
        }
        (isReportedSettable(n) ? out.reported : out.extras).set(n, v);
      }
    } else if (name.rfind("_pq_.", 0) == 0) {
      continue;  // protocol options: pgproxy speaks protocol 3.0 to the servers
    } else {
      (isReportedSettable(name) ? out.reported : out.extras).set(name, value);
    }
  }
  if (out.database.empty()) {
    out.database = out.user;
  }
  return {};
}

std::uint64_t stateDigest(const Params& base, const Params& over, const Params& extras) {
  // Order-independent: a sum of per-entry hashes (names folded to lower case, as they compare).
  auto entry = [](std::string_view name, std::string_view value, std::uint64_t kind) {
    std::uint64_t h = 14695981039346656037ull ^ kind;
    for (char c : name) {
      h = (h ^ static_cast<unsigned char>(c >= 'A' && c <= 'Z' ? c + 32 : c)) * 1099511628211ull;
    }
    h = (h ^ 0xff) * 1099511628211ull;
    for (char c : value) {
      h = (h ^ static_cast<unsigned char>(c)) * 1099511628211ull;
    }
    return h ^ (h >> 29);
  };
  std::uint64_t digest = 0;
  for (const auto& [name, value] : over.entries()) {
    if (isReportedSettable(name)) {
      digest += entry(name, value, 1);
    }
  }
  for (const auto& [name, value] : base.entries()) {
    if (isReportedSettable(name) && !over.get(name)) {
      digest += entry(name, value, 1);
    }
  }
  for (const auto& [name, value] : extras.entries()) {
    digest += entry(name, value, 2);
  }
  return digest;
}

std::string syncQuery(const Params& base, const Params& client, const Params& server,
                      const Params& client_extras, const Params& server_extras) {
  std::string sets;
  auto add = [&](const std::string& name, const std::string& value) {
    sets += sets.empty() ? "SELECT " : ", ";
    sets += "pg_catalog.set_config(";
    appendLiteral(sets, name);
    sets += ", ";
    appendLiteral(sets, value);
    sets += ", false)";
  };
  auto want = [&](const std::string& name, const std::string& value) {
    const std::string* have = server.get(name);
    if (isReportedSettable(name) && (!have || *have != value)) {
      add(name, value);
    }
  };
  for (const auto& [name, value] : client.entries()) {
    want(name, value);
  }
  for (const auto& [name, value] : base.entries()) {
    if (!client.get(name)) {
      want(name, value);
    }
  }
  for (const auto& [name, value] : client_extras.entries()) {
    const std::string* have = server_extras.get(name);
    if (!have || *have != value) {
      add(name, value);
    }
  }
  std::string resets;
  for (const auto& [name, value] : server_extras.entries()) {
    if (!client_extras.get(name)) {
      resets += "; RESET ";
      // An identifier: the name as a quoted identifier, quotes doubled.
      resets += '"';
      for (char c : name) {
        resets += c == '"' ? std::string("\"\"") : std::string(1, c);
      }
      resets += '"';
    }
  }
  if (sets.empty() && !resets.empty()) {
    return resets.substr(2);
  }
  return sets + resets;
}

}  // namespace pgproxy::pool
