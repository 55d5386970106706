#include "pgproxy/admin/console_command.h"

#include <array>
#include <cctype>

namespace pgproxy::admin {
namespace {

constexpr std::array<CommandSpec, 12> kCommands{{
    {"SHOW", Verb::kShow, Operand::kTopic, "show the live state (see the topics)"},
    {"PAUSE", Verb::kPause, Operand::kOptionalMapping,
     "let transactions finish, then hold new ones (one mapping, or all)"},
    {"RESUME", Verb::kResume, Operand::kOptionalMapping, "end a PAUSE"},
    {"DISABLE", Verb::kDisable, Operand::kMapping, "refuse the mapping's new clients"},
    {"ENABLE", Verb::kEnable, Operand::kMapping, "end a DISABLE"},
    {"KILL", Verb::kKill, Operand::kMapping, "drop the mapping's sessions"},
    {"KILL_CLIENT", Verb::kKillClient, Operand::kClientId, "drop one session (SHOW CLIENTS' id)"},
    {"RECONNECT", Verb::kReconnect, Operand::kMapping,
     "close the mapping's server connections as they are released"},
    {"DRAIN BACKEND", Verb::kDrainBackend, Operand::kBackend,
     "take a backend out of balancing while its sessions finish"},
    {"UNDRAIN BACKEND", Verb::kUndrainBackend, Operand::kBackend, "end a DRAIN BACKEND"},
    {"RELOAD", Verb::kReload, Operand::kNone, "re-read the configuration, as pgproxy -s reload"},
    {"SHUTDOWN", Verb::kShutdown, Operand::kOptionalWait,
     "stop pgproxy (WAIT: after its sessions end, as pgproxy -s quit)"},
}};

constexpr std::array<TopicSpec, 10> kTopics{{
    {"MAPPINGS", Topic::kMappings},
    {"BACKENDS", Topic::kBackends},
    {"POOLS", Topic::kPools},
    {"CLIENTS", Topic::kClients},
    {"SERVERS", Topic::kServers},
    {"STATS", Topic::kStats},
    {"LIMITS", Topic::kLimits},
    {"GENERATIONS", Topic::kGenerations},
    {"CONFIG", Topic::kConfig},
    {"VERSION", Topic::kVersion},
}};

bool bareChar(unsigned char c) {
  return std::isalnum(c) || c == '.' || c == '_' || c == '-' || c == '*' || c == ':' || c == '[' ||
         c == ']';
}

bool sameWord(std::string_view a, std::string_view b) {
  if (a.size() != b.size()) {
    return false;
  }
  for (std::size_t i = 0; i < a.size(); ++i) {
    if (std::toupper(static_cast<unsigned char>(a[i])) != b[i]) {
      return false;
    }
  }
  return true;
}

struct Token {
  enum class Kind { kWord, kQuoted, kSemicolon, kEnd, kBad } kind = Kind::kEnd;
  std::string text;  // a word as written; a quoted name unquoted
};

// Words, quoted names and ';', skipping spaces and comments (-- to the line's end; /* */ nested,
// as PostgreSQL nests them).
class Lexer {
 public:
  explicit Lexer(std::string_view s) : s_(s) {}

  Token next() {
    skip();
    Token t;
    if (!bad_.empty()) {
      return badToken();
    }
    if (i_ >= s_.size()) {
      return t;
    }
    char c = s_[i_];
    if (c == ';') {
      ++i_;
      t.kind = Token::Kind::kSemicolon;
      return t;
    }
    if (c == '\'' || c == '"') {
      ++i_;
      for (;;) {
        if (i_ >= s_.size()) {
          return bad("a quoted name is not closed");
        }
        bool doubled = s_[i_] == c && i_ + 1 < s_.size() && s_[i_ + 1] == c;
        if (s_[i_] == c && !doubled) {
          ++i_;
          break;
        }
        if (t.text.size() >= kMaxConsoleName) {
          return bad("a name is longer than 512 bytes");
        }
        t.text.push_back(s_[i_]);
        i_ += doubled ? 2 : 1;
      }
      t.kind = Token::Kind::kQuoted;
      return t;
    }
    if (!bareChar(static_cast<unsigned char>(c))) {
      return bad(std::string("unexpected character '") + c + "'");
    }
    std::size_t start = i_;
    while (i_ < s_.size() && bareChar(static_cast<unsigned char>(s_[i_]))) {
      ++i_;
    }
    if (i_ - start > kMaxConsoleName) {
      return bad("a name is longer than 512 bytes");
    }
    t.kind = Token::Kind::kWord;
    t.text.assign(s_.substr(start, i_ - start));
    return t;
  }

 private:
  // Once the input is bad every later token says so.
  Token bad(std::string why) {
    bad_ = std::move(why);
    return badToken();
  }
  Token badToken() const {
    Token t;
    t.kind = Token::Kind::kBad;
    t.text = bad_;
    return t;
  }

  void skip() {
    while (i_ < s_.size()) {
      unsigned char c = static_cast<unsigned char>(s_[i_]);
      if (std::isspace(c)) {
        ++i_;
      } else if (s_.substr(i_, 2) == "--") {
        std::size_t nl = s_.find('\n', i_);
        i_ = nl == std::string_view::npos ? s_.size() : nl + 1;
      } else if (s_.substr(i_, 2) == "/*") {
        int depth = 0;
        do {
          if (s_.substr(i_, 2) == "/*") {
            ++depth;
            i_ += 2;
          } else if (s_.substr(i_, 2) == "*/") {
            --depth;
            i_ += 2;
          } else {
            ++i_;
          }
        } while (depth > 0 && i_ < s_.size());
        if (depth > 0) {
          bad_ = "a comment is not closed";
          return;
        }
      } else {
        return;
      }
    }
  }

  std::string_view s_;
  std::size_t i_ = 0;
  std::string bad_;
};

base::Error syntax(std::string why) {
  return base::Error{"pgproxy console: " + std::move(why)};
}

// The keywords of a table, for an error message.
template <typename Table>
std::string keywords(const Table& table) {
  std::string out;
  for (const auto& row : table) {
    out += out.empty() ? "" : ", ";
    out += row.keyword;
  }
  return out;
}

bool isName(const Token& t) {
  return (t.kind == Token::Kind::kWord || t.kind == Token::Kind::kQuoted) && !t.text.empty();
}

// host:port, the port 1-65535 (a bracketed IPv6 address keeps its colons inside the brackets).
bool backendAddress(std::string_view s) {
  std::size_t colon = s.rfind(':');
  if (colon == std::string_view::npos || colon == 0 || colon + 1 == s.size() ||
      s.size() - colon - 1 > 5) {
    return false;
  }
  std::string_view host = s.substr(0, colon);
  if (host.front() == '[' ? host.back() != ']' : host.find(':') != std::string_view::npos) {
    return false;
  }
  unsigned port = 0;
  for (char c : s.substr(colon + 1)) {
    if (c < '0' || c > '9') {
      return false;
    }
    port = port * 10 + static_cast<unsigned>(c - '0');
  }
  return port >= 1 && port <= 65535;
}

bool needsQuotes(std::string_view name) {
  if (name.empty()) {
    return true;
  }
  for (char c : name) {
    if (!bareChar(static_cast<unsigned char>(c))) {
      return true;
    }
  }
  // A bare word that is a keyword would read back as that keyword, and one that starts with
  // "--" as a comment.
  return sameWord(name, "WAIT") || sameWord(name, "BACKEND") ||
         name.find("--") != std::string_view::npos;
}

}  // namespace

std::span<const CommandSpec> commands() {
  return kCommands;
}

std::span<const TopicSpec> topics() {
  return kTopics;
}

base::Result<Command> parseCommand(std::string_view sql) {
  Lexer lex(sql);
  Token first = lex.next();
  Command cmd;
  while (first.kind == Token::Kind::kSemicolon) {
    first = lex.next();
  }
  if (first.kind == Token::Kind::kBad) {
    return syntax(first.text);
  }
  if (first.kind == Token::Kind::kEnd) {
    return cmd;  // kEmpty
  }
  if (first.kind != Token::Kind::kWord) {
    return syntax("a command starts with a keyword (" + keywords(kCommands) + ")");
  }
  const CommandSpec* spec = nullptr;
  for (const CommandSpec& c : kCommands) {
    std::string_view word = c.keyword.substr(0, c.keyword.find(' '));
    if (sameWord(first.text, word)) {
      spec = &c;
      break;
    }
  }
  if (!spec) {
    return syntax("unknown command \"" + first.text.substr(0, 64) + "\"; the console runs " +
                  keywords(kCommands));
  }
  cmd.verb = spec->verb;
  if (std::size_t space = spec->keyword.find(' '); space != std::string_view::npos) {
    Token second = lex.next();
    std::string_view rest = spec->keyword.substr(space + 1);
    if (second.kind != Token::Kind::kWord || !sameWord(second.text, rest)) {
      return syntax(std::string(spec->keyword.substr(0, space)) + " needs " + std::string(rest) +
                    ": " + std::string(spec->keyword) + " host:port");
    }
  }
  Token t = lex.next();
  if (t.kind == Token::Kind::kBad) {
    return syntax(t.text);
  }
  const std::string keyword(spec->keyword);
  switch (spec->operand) {
    case Operand::kNone:
      break;
    case Operand::kTopic: {
      const TopicSpec* topic = nullptr;
      for (const TopicSpec& s : kTopics) {
        if (t.kind == Token::Kind::kWord && sameWord(t.text, s.keyword)) {
          topic = &s;
        }
      }
      if (!topic) {
        return syntax("SHOW what? " + keywords(kTopics));
      }
      cmd.topic = topic->topic;
      t = lex.next();
      break;
    }
    case Operand::kOptionalMapping:
    case Operand::kMapping:
      if (isName(t)) {
        cmd.target = std::move(t.text);
        t = lex.next();
      } else if (spec->operand == Operand::kMapping) {
        return syntax(keyword +
                      " needs a mapping's name (its external name, as SHOW MAPPINGS "
                      "lists it)");
      }
      break;
    case Operand::kClientId: {
      bool digits = t.kind == Token::Kind::kWord && !t.text.empty() && t.text.size() <= 19;
      for (char c : t.text) {
        digits = digits && c >= '0' && c <= '9';
      }
      if (!digits) {
        return syntax("KILL_CLIENT needs a client's id (a number, as SHOW CLIENTS lists it)");
      }
      for (char c : t.text) {
        cmd.client = cmd.client * 10 + static_cast<std::uint64_t>(c - '0');
      }
      t = lex.next();
      break;
    }
    case Operand::kBackend:
      if (!isName(t) || !backendAddress(t.text)) {
        return syntax(keyword + " needs a backend's host:port (as SHOW BACKENDS lists it)");
      }
      cmd.target = std::move(t.text);
      t = lex.next();
      break;
    case Operand::kOptionalWait:
      if (t.kind == Token::Kind::kWord && sameWord(t.text, "WAIT")) {
        cmd.wait = true;
        t = lex.next();
      }
      break;
  }
  const bool ended = t.kind == Token::Kind::kSemicolon;
  while (t.kind == Token::Kind::kSemicolon) {
    t = lex.next();
  }
  if (t.kind == Token::Kind::kBad) {
    return syntax(t.text);
  }
  if (t.kind != Token::Kind::kEnd) {
    return syntax(ended ? "one command per query"
                        : "unexpected \"" + t.text.substr(0, 64) + "\" after " + keyword);
  }
  return cmd;
}

std::string formatCommand(const Command& c) {
  if (c.verb == Verb::kEmpty) {
    return {};
  }
  std::string out;
  for (const CommandSpec& s : kCommands) {
    if (s.verb == c.verb) {
      out = s.keyword;
    }
  }
  if (c.verb == Verb::kShow) {
    for (const TopicSpec& t : kTopics) {
      if (t.topic == c.topic) {
        out += ' ';
        out += t.keyword;
      }
    }
  }
  if (!c.target.empty()) {
    out += ' ';
    if (needsQuotes(c.target)) {
      out += '"';
      for (char ch : c.target) {
        out += ch;
        if (ch == '"') {
          out += '"';
        }
      }
      out += '"';
    } else {
      out += c.target;
    }
  }
  if (c.verb == Verb::kKillClient) {
    out += ' ' + std::to_string(c.client);
  }
  if (c.wait) {
    out += " WAIT";
  }
  return out;
}

}  // namespace pgproxy::admin
