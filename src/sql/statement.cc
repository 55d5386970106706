#include "pgproxy/sql/statement.h"

#include <cstdint>
#include <iterator>

#include "pgproxy/sql/lexer.h"

namespace pgproxy::sql {
namespace {

// One statement's tokens, bounded: classification needs the first few and a scan for calls; a
// statement of a million tokens is scanned as it is lexed, not stored.
struct Scan {
  std::string_view sql;
  std::vector<Token> head;  // the first kHead tokens
  static constexpr std::size_t kHead = 48;

  std::string_view text(const Token& t) const { return sql.substr(t.begin, t.end - t.begin); }
  bool kw(std::size_t i, std::string_view word) const {
    return i < head.size() && head[i].type == Tok::kIdent && iequals(text(head[i]), word);
  }
  bool punct(std::size_t i, char c) const {
    return i < head.size() && head[i].type == Tok::kPunct && head[i].quote == c;
  }
  bool isName(std::size_t i) const {
    return i < head.size() && (head[i].type == Tok::kIdent || head[i].type == Tok::kQuotedIdent);
  }
};

// The text of a literal, when pgproxy can decode it exactly; false for escapes it does not
// interpret (E'' octal/hex/unicode, U&'' escapes, bit strings).
bool decodeString(std::string_view raw, char quote, std::string& out) {
  out.clear();
  if (quote == '$') {
    std::size_t tag_end = raw.find('$', 1);
    if (tag_end == std::string_view::npos) {
      return false;
    }
    std::size_t tag_len = tag_end + 1;
    if (raw.size() < 2 * tag_len) {
      return false;  // unterminated
    }
    out.assign(raw.substr(tag_len, raw.size() - 2 * tag_len));
    return true;
  }
  if (quote == '\'' && raw.size() >= 2 && raw[0] == '\'') {
    if (raw.back() != '\'') {
      return false;
    }
    for (std::size_t i = 1; i + 1 < raw.size(); ++i) {
      out.push_back(raw[i]);
      if (raw[i] == '\'') {
        ++i;  // the doubled quote
      }
    }
    return true;
  }
  if (quote == 'E' && raw.size() >= 3) {
    if (raw.back() != '\'') {
      return false;
    }
    for (std::size_t i = 2; i + 1 < raw.size(); ++i) {
      char c = raw[i];
      if (c == '\'') {
        out.push_back('\'');
        ++i;
      } else if (c == '\\') {
        if (i + 2 >= raw.size()) {
          return false;
        }
        char e = raw[++i];
        switch (e) {
          case 'n':
            out.push_back('\n');
            break;
          case 't':
            out.push_back('\t');
            break;
          case 'r':
            out.push_back('\r');
            break;
          case 'b':
            out.push_back('\b');
            break;
          case 'f':
            out.push_back('\f');
            break;
          case '\\':
          case '\'':
          case '"':
            out.push_back(e);
            break;
          default:
            return false;
        }
      } else {
        out.push_back(c);
      }
    }
    return true;
  }
  return false;
}

// A boolean literal as PostgreSQL reads one (TRUE, 'on', 'f', ...).
bool isBoolLiteral(const Scan& scan, const Token& t, bool want) {
  if (t.type == Tok::kIdent) {
    return iequals(scan.text(t), want ? "true" : "false");
  }
  std::string v;
  if (t.type == Tok::kString && decodeString(scan.text(t), t.quote, v)) {
    static constexpr std::string_view kTrue[] = {"true", "t",  "on",  "yes", "y",
                                                 "1",    "tr", "tru", "ye"};
    static constexpr std::string_view kFalse[] = {"false", "f",  "off", "no",   "n",
                                                  "0",     "fa", "fal", "fals", "of"};
    const std::string_view* b = want ? std::begin(kTrue) : std::begin(kFalse);
    const std::string_view* e = want ? std::end(kTrue) : std::end(kFalse);
    for (; b != e; ++b) {
      if (iequals(v, *b)) {
        return true;
      }
    }
  }
  return false;
}

// Tracks the calls of the functions a pool cares about as tokens go by: `name (` at any depth,
// qualified or not; set_config's arguments are collected until its closing parenthesis.
class CallScanner {
 public:
  explicit CallScanner(const Scan& scan, Statement& st) : scan_(scan), st_(st) {}

  // The statement ended inside set_config's parentheses: PostgreSQL refuses it, but count it as
  // a session change of unknown effect rather than none.
  void finish() {
    if (in_config_) {
      in_config_ = false;
      st_.set_config = true;
      st_.set_config_opaque = true;
    }
  }

  void feed(const Token& t) {
    if (in_config_) {
      configArg(t);
    }
    if (t.type == Tok::kPunct && t.quote == '(' && prev_fn_ != Fn::kNone) {
      onCall(prev_fn_);
    }
    prev_fn_ = Fn::kNone;
    if (t.type == Tok::kIdent || t.type == Tok::kQuotedIdent) {
      prev_fn_ = classify(t);
    }
  }

 private:
  enum class Fn { kNone, kLock, kUnlock, kUnlockAll, kSetConfig };

  Fn classify(const Token& t) const {
    std::string_view name = scan_.text(t);
    std::string folded;
    if (t.type == Tok::kQuotedIdent) {
      folded = foldIdentifier(name);
      name = folded;
    }
    static constexpr std::string_view kLocks[] = {"pg_advisory_lock", "pg_advisory_lock_shared",
                                                  "pg_try_advisory_lock",
                                                  "pg_try_advisory_lock_shared"};
    for (auto n : kLocks) {
      if (iequals(name, n)) {
        return Fn::kLock;
      }
    }
    if (iequals(name, "pg_advisory_unlock") || iequals(name, "pg_advisory_unlock_shared")) {
      return Fn::kUnlock;
    }
    if (iequals(name, "pg_advisory_unlock_all")) {
      return Fn::kUnlockAll;
    }
    if (iequals(name, "set_config")) {
      return Fn::kSetConfig;
    }
    return Fn::kNone;
  }

  void onCall(Fn fn) {
    switch (fn) {
      case Fn::kLock:
        st_.advisory_lock = true;
        ++st_.advisory_locks;
        break;
      case Fn::kUnlock:
        st_.advisory_unlock = true;
        ++st_.advisory_unlocks;
        break;
      case Fn::kUnlockAll:
        st_.advisory_unlock_all = true;
        break;
      case Fn::kSetConfig:
        if (!in_config_) {  // set_config(set_config(...)) counts as one opaque call
          in_config_ = true;
          depth_ = 1;
          args_ = 0;
          arg_tokens_ = 0;
          name_tokens_ = 0;
          literal_ = true;
          for (auto& a : arg_) {
            a = Token{};
          }
        } else {
          literal_ = false;
          st_.set_config_opaque = true;  // the inner call's effect is not followed
        }
        break;
      case Fn::kNone:
        break;
    }
  }

  void configArg(const Token& t) {
    bool open = t.type == Tok::kPunct && t.quote == '(';
    bool close = t.type == Tok::kPunct && t.quote == ')';
    if (open) {
      if (++depth_ > 1) {
        literal_ = false;
      }
      return;
    }
    if (close && --depth_ == 0) {
      finishConfig();
      return;
    }
    if (depth_ == 1 && t.type == Tok::kPunct && t.quote == ',') {
      if (arg_tokens_ != 1) {
        literal_ = false;
      }
      if (args_ == 0) {
        name_tokens_ = arg_tokens_;
      }
      ++args_;
      arg_tokens_ = 0;
      return;
    }
    if (args_ < 3) {
      arg_[args_] = t;
    }
    ++arg_tokens_;
  }

  void finishConfig() {
    in_config_ = false;
    bool one_each = arg_tokens_ == 1 && args_ == 2 && literal_;
    if (one_each && isBoolLiteral(scan_, arg_[2], true)) {
      return;  // transaction-local: ends with the transaction
    }
    st_.set_config = true;
    std::string name, value;
    bool named = args_ >= 1 && name_tokens_ == 1 && arg_[0].type == Tok::kString &&
                 decodeString(scan_.text(arg_[0]), arg_[0].quote, name);
    if (!named || st_.config_calls.size() >= Statement::kMaxConfigCalls) {
      st_.set_config_opaque = true;
    } else if (one_each && isBoolLiteral(scan_, arg_[2], false) && arg_[1].type == Tok::kString &&
               decodeString(scan_.text(arg_[1]), arg_[1].quote, value)) {
      st_.config_calls.push_back({std::move(name), std::move(value), true});
    } else {
      // A parameter or an expression: which value it set (and whether for the session) is
      // known to the server alone.
      st_.config_calls.push_back({std::move(name), {}, false});
    }
  }

  const Scan& scan_;
  Statement& st_;
  Fn prev_fn_ = Fn::kNone;
  bool in_config_ = false;
  bool literal_ = true;
  int depth_ = 0;
  std::size_t args_ = 0, arg_tokens_ = 0, name_tokens_ = 0;
  Token arg_[3];
};

std::string trimmed(std::string_view s) {
  while (!s.empty() && isSpace(static_cast<unsigned char>(s.front()))) {
    s.remove_prefix(1);
  }
  while (!s.empty() && isSpace(static_cast<unsigned char>(s.back()))) {
    s.remove_suffix(1);
  }
  return std::string(s);
}

// A possibly qualified name (a.b.c) from head[i]; returns the index after it.
std::size_t dottedName(const Scan& scan, std::size_t i, std::string& out) {
  out.clear();
  while (scan.isName(i)) {
    out += foldIdentifier(scan.text(scan.head[i]));
    ++i;
    if (!scan.punct(i, '.') || !scan.isName(i + 1)) {
      break;
    }
    out += '.';
    ++i;
  }
  return i;
}

// The text of the statement from head[i] to its end (`end` = the end of its last token).
std::string restFrom(const Scan& scan, std::size_t i, std::size_t end) {
  if (i >= scan.head.size()) {
    return {};
  }
  return trimmed(scan.sql.substr(scan.head[i].begin, end - scan.head[i].begin));
}

void classifySet(const Scan& scan, std::size_t end, Statement& st) {
  std::size_t i = 1;
  if (scan.kw(i, "local")) {
    st.kind = Kind::kSetLocal;
    return;
  }
  if (scan.kw(i, "transaction")) {
    st.kind = Kind::kSetLocal;  // SET TRANSACTION: this transaction's characteristics only
    return;
  }
  if (scan.kw(i, "session")) {
    if (scan.kw(i + 1, "characteristics")) {
      st.kind = Kind::kSetOther;
      return;
    }
    if (scan.kw(i + 1, "authorization")) {
      st.kind = Kind::kSet;
      st.name = "session_authorization";
      st.value = restFrom(scan, i + 2, end);
      if (iequals(st.value, "default")) {
        st.kind = Kind::kReset;
        st.value.clear();
      }
      return;
    }
    ++i;
  }
  std::size_t v = 0;
  if (scan.kw(i, "time") && scan.kw(i + 1, "zone")) {
    st.name = "timezone";
    v = i + 2;
  } else if (scan.kw(i, "schema")) {
    st.name = "search_path";
    v = i + 1;
  } else if (scan.kw(i, "names")) {
    st.name = "client_encoding";
    v = i + 1;
  } else if (scan.kw(i, "role")) {
    st.name = "role";
    v = i + 1;
  } else {
    v = dottedName(scan, i, st.name);
    if (st.name.empty()) {
      st.kind = Kind::kOther;  // not a SET PostgreSQL would accept
      return;
    }
    if (scan.kw(v, "to") || scan.punct(v, '=')) {
      ++v;
    } else if (scan.kw(v, "from") && scan.kw(v + 1, "current")) {
      st.kind = Kind::kSetOther;  // SET x FROM CURRENT: a function-definition form
      return;
    } else {
      st.kind = Kind::kOther;
      st.name.clear();
      return;
    }
  }
  st.kind = Kind::kSet;
  st.value = restFrom(scan, v, end);
  // SET x TO DEFAULT (and SET TIME ZONE LOCAL, SET ROLE NONE) is RESET x.
  if (iequals(st.value, "default") || (st.name == "timezone" && iequals(st.value, "local")) ||
      (st.name == "role" && iequals(st.value, "none"))) {
    st.kind = Kind::kReset;
    st.value.clear();
  }
}

void classifyReset(const Scan& scan, Statement& st) {
  if (scan.kw(1, "all")) {
    st.kind = Kind::kResetAll;
    return;
  }
  st.kind = Kind::kReset;
  if (scan.kw(1, "time") && scan.kw(2, "zone")) {
    st.name = "timezone";
  } else if (scan.kw(1, "session") && scan.kw(2, "authorization")) {
    st.name = "session_authorization";
  } else {
    dottedName(scan, 1, st.name);
    if (st.name.empty()) {
      st.kind = Kind::kOther;
    }
  }
}

// CREATE [OR REPLACE] [GLOBAL|LOCAL] {TEMP|TEMPORARY} [UNLOGGED|RECURSIVE] {TABLE|VIEW|SEQUENCE},
// not ON COMMIT DROP; or any CREATE whose object is qualified by pg_temp.
void classifyCreate(const Scan& scan, bool on_commit_drop, Statement& st) {
  std::size_t i = 1;
  if (scan.kw(i, "or") && scan.kw(i + 1, "replace")) {
    i += 2;
  }
  if (scan.kw(i, "global") || scan.kw(i, "local")) {
    ++i;
  }
  if (scan.kw(i, "temp") || scan.kw(i, "temporary")) {
    if (!on_commit_drop) {
      st.kind = Kind::kCreateTemp;
    }
    return;
  }
  for (std::size_t j = i; j + 1 < scan.head.size(); ++j) {
    if (scan.punct(j, '(') || scan.kw(j, "as")) {
      break;
    }
    if (scan.isName(j) && foldIdentifier(scan.text(scan.head[j])) == "pg_temp" &&
        scan.punct(j + 1, '.')) {
      if (!on_commit_drop) {
        st.kind = Kind::kCreateTemp;
      }
      return;
    }
  }
}

void classify(const Scan& scan, std::size_t end, bool on_commit_drop, bool with_hold,
              bool into_temp, Statement& st) {
  if (scan.head.empty()) {
    st.kind = Kind::kEmpty;
    return;
  }
  auto name_at = [&](std::size_t i) {
    if (scan.isName(i)) {
      st.name = foldIdentifier(scan.text(scan.head[i]));
    }
  };
  if (scan.kw(0, "begin")) {
    st.kind = Kind::kBegin;
  } else if (scan.kw(0, "start") && scan.kw(1, "transaction")) {
    st.kind = Kind::kBegin;
  } else if (scan.kw(0, "commit") || scan.kw(0, "end")) {
    if (!scan.kw(1, "prepared")) {
      st.kind = Kind::kCommit;
    }
  } else if (scan.kw(0, "rollback") || scan.kw(0, "abort")) {
    std::size_t i = 1;
    if (scan.kw(i, "work") || scan.kw(i, "transaction")) {
      ++i;
    }
    if (scan.kw(i, "to")) {
      st.kind = Kind::kRollbackTo;
      name_at(scan.kw(i + 1, "savepoint") && scan.isName(i + 2) ? i + 2 : i + 1);
    } else if (!scan.kw(1, "prepared")) {
      st.kind = Kind::kRollback;
    }
  } else if (scan.kw(0, "savepoint")) {
    st.kind = Kind::kSavepoint;
    name_at(1);
  } else if (scan.kw(0, "release")) {
    st.kind = Kind::kRelease;
    name_at(scan.kw(1, "savepoint") && scan.isName(2) ? 2 : 1);
  } else if (scan.kw(0, "set")) {
    classifySet(scan, end, st);
  } else if (scan.kw(0, "reset")) {
    classifyReset(scan, st);
  } else if (scan.kw(0, "prepare")) {
    // PREPARE TRANSACTION 'gid' is two-phase commit, not a prepared statement.
    if (!(scan.kw(1, "transaction") && scan.head.size() > 2 && scan.head[2].type == Tok::kString)) {
      st.kind = Kind::kPrepare;
      name_at(1);
    }
  } else if (scan.kw(0, "execute")) {
    st.kind = Kind::kExecute;
    name_at(1);
  } else if (scan.kw(0, "deallocate")) {
    std::size_t i = scan.kw(1, "prepare") && scan.isName(2) ? 2 : 1;
    if (scan.kw(i, "all")) {
      st.kind = Kind::kDeallocateAll;
    } else {
      st.kind = Kind::kDeallocate;
      name_at(i);
    }
  } else if (scan.kw(0, "discard")) {
    if (scan.kw(1, "all")) {
      st.kind = Kind::kDiscardAll;
    } else if (scan.kw(1, "temp") || scan.kw(1, "temporary")) {
      st.kind = Kind::kDiscardTemp;
    } else {
      st.kind = Kind::kDiscardOther;
    }
  } else if (scan.kw(0, "listen")) {
    st.kind = Kind::kListen;
    name_at(1);
  } else if (scan.kw(0, "unlisten")) {
    if (scan.punct(1, '*')) {
      st.kind = Kind::kUnlistenAll;
    } else {
      st.kind = Kind::kUnlisten;
      name_at(1);
    }
  } else if (scan.kw(0, "declare")) {
    if (with_hold) {
      st.kind = Kind::kDeclareHold;
      name_at(1);
    }
  } else if (scan.kw(0, "close")) {
    if (scan.kw(1, "all")) {
      st.kind = Kind::kCloseAll;
    } else {
      st.kind = Kind::kClose;
      name_at(1);
    }
  } else if (scan.kw(0, "create")) {
    classifyCreate(scan, on_commit_drop, st);
  } else if (scan.kw(0, "select") || scan.kw(0, "with")) {
    if (into_temp && !on_commit_drop) {
      st.kind = Kind::kCreateTemp;  // SELECT ... INTO TEMP t
    }
  }
}

}  // namespace

std::string foldIdentifier(std::string_view ident) {
  std::string out;
  if (ident.size() >= 3 && (ident[0] == 'u' || ident[0] == 'U') && ident[1] == '&' &&
      ident[2] == '"') {
    ident.remove_prefix(2);
  }
  if (!ident.empty() && ident[0] == '"') {
    ident.remove_prefix(1);
    if (!ident.empty() && ident.back() == '"') {
      ident.remove_suffix(1);
    }
    out.reserve(ident.size());
    for (std::size_t i = 0; i < ident.size(); ++i) {
      out.push_back(ident[i]);
      if (ident[i] == '"' && i + 1 < ident.size() && ident[i + 1] == '"') {
        ++i;
      }
    }
    return out;
  }
  out.reserve(ident.size());
  for (char c : ident) {
    out.push_back(lower(c));
  }
  return out;
}

bool settingValue(std::string_view value, std::string& out) {
  out.clear();
  Lexer lex(value);
  std::vector<std::string> items;
  std::string item;
  std::string decoded;
  bool have = false;  // the item has its word, number or literal
  bool quoted = false, multi = false;
  for (;;) {
    Token t = lex.next();
    if (t.type == Tok::kEnd || (t.type == Tok::kPunct && t.quote == ',')) {
      if (!have) {
        return false;
      }
      items.push_back(std::move(item));
      item.clear();
      have = false;
      if (t.type == Tok::kEnd) {
        break;
      }
      multi = true;
      continue;
    }
    std::string_view text = value.substr(t.begin, t.end - t.begin);
    if (have) {
      return false;  // two tokens in one item: INTERVAL '1' HOUR and the like
    }
    switch (t.type) {
      case Tok::kPunct:
        if ((t.quote != '-' && t.quote != '+') || !item.empty()) {
          return false;
        }
        item.push_back(t.quote);  // a signed number follows
        continue;
      case Tok::kNumber:
        item.append(text);
        break;
      case Tok::kIdent:
      case Tok::kString:
      case Tok::kQuotedIdent:
        if (!item.empty()) {
          return false;  // a sign before a word
        }
        if (t.type == Tok::kIdent) {
          item = foldIdentifier(text);
        } else if (t.type == Tok::kString) {
          if (!decodeString(text, t.quote, decoded)) {
            return false;
          }
          item = decoded;
        } else {
          if (text[0] != '"') {
            return false;  // U&"...": escapes pgproxy does not interpret
          }
          quoted = true;
          item.assign(text);  // kept as written until it is known whether this is a list
        }
        break;
      default:
        return false;
    }
    have = true;
  }
  if (lex.unterminated() || items.empty()) {
    return false;
  }
  if (!multi && quoted) {
    out = foldIdentifier(items[0]);
    return true;
  }
  for (std::size_t i = 0; i < items.size(); ++i) {
    out += i == 0 ? "" : ", ";
    out += items[i];
  }
  return true;
}

std::string quoteIdentifier(std::string_view name) {
  std::string out;
  out.reserve(name.size() + 2);
  out.push_back('"');
  for (char c : name) {
    if (c == '"') {
      out.push_back('"');
    }
    out.push_back(c);
  }
  out.push_back('"');
  return out;
}

Split split(std::string_view sql, std::size_t max) {
  Split result;
  Lexer lex(sql);
  bool any = false;
  for (;;) {
    Scan scan{sql, {}};
    Statement st;
    CallScanner calls(scan, st);
    int depth = 0;
    // CREATE FUNCTION ... BEGIN ATOMIC ... END holds ';' inside (PostgreSQL 14+), as does CASE
    // ... END within it: psql counts them the same way.
    bool routine = false;
    int begin_depth = 0;
    bool on_commit_drop = false, with_hold = false, into_temp = false, seen_for = false;
    std::size_t first = sql.size(), last = 0, count = 0;
    Token prev2, prev;
    Token t;
    for (;;) {
      t = lex.next();
      if (t.type == Tok::kEnd) {
        break;
      }
      if (t.type == Tok::kPunct && t.quote == ';' && depth == 0 && begin_depth == 0) {
        break;
      }
      if (count == 0) {
        first = t.begin;
      }
      last = t.end;
      if (scan.head.size() < Scan::kHead) {
        scan.head.push_back(t);
      }
      ++count;
      if (t.type == Tok::kPunct) {
        if (t.quote == '(') {
          ++depth;
        } else if (t.quote == ')' && depth > 0) {
          --depth;
        }
      }
      if (count <= 5 && scan.kw(0, "create") && t.type == Tok::kIdent &&
          (iequals(scan.text(t), "function") || iequals(scan.text(t), "procedure"))) {
        routine = true;
      }
      if (routine && t.type == Tok::kIdent) {
        std::string_view w = scan.text(t);
        if (iequals(w, "begin") || iequals(w, "case")) {
          ++begin_depth;
        } else if (iequals(w, "end") && begin_depth > 0) {
          --begin_depth;
        }
      }
      if (depth == 0 && t.type == Tok::kIdent) {
        std::string_view w = scan.text(t);
        if (iequals(w, "drop") && prev.type == Tok::kIdent && iequals(scan.text(prev), "commit") &&
            prev2.type == Tok::kIdent && iequals(scan.text(prev2), "on")) {
          on_commit_drop = true;
        } else if (!seen_for && iequals(w, "hold") && prev.type == Tok::kIdent &&
                   iequals(scan.text(prev), "with")) {
          with_hold = true;
        } else if ((iequals(w, "temp") || iequals(w, "temporary")) && prev.type == Tok::kIdent &&
                   iequals(scan.text(prev), "into")) {
          into_temp = true;
        }
      }
      if (t.type == Tok::kIdent && iequals(scan.text(t), "for")) {
        seen_for = true;
      }
      calls.feed(t);
      prev2 = prev;
      prev = t;
    }
    calls.finish();
    if (count > 0) {
      if (result.statements.size() >= max) {
        result.truncated = true;
        break;
      }
      if (lex.unterminated()) {
        last = sql.size();  // an unclosed comment after the last token is part of it too
      }
      // An unterminated literal runs to the end of the input, its trailing spaces included.
      while (last > first && isSpace(static_cast<unsigned char>(sql[last - 1]))) {
        --last;
      }
      st.text = sql.substr(first, last - first);
      if (lex.unterminated()) {
        // PostgreSQL refuses the whole statement (unterminated quoted string or comment), so
        // it changes nothing a pool tracks; classifying a half-read name could only mislead.
        Statement refused;
        refused.text = st.text;
        st = std::move(refused);
      } else {
        classify(scan, last, on_commit_drop, with_hold, into_temp, st);
      }
      result.statements.push_back(std::move(st));
      any = true;
    }
    if (t.type == Tok::kEnd) {
      break;
    }
  }
  if (!any && !result.truncated && max > 0) {
    Statement st;
    st.kind = Kind::kEmpty;
    st.text = sql.substr(0, 0);
    result.statements.push_back(std::move(st));
  }
  return result;
}

}  // namespace pgproxy::sql
