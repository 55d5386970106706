#pragma once

#include <cstddef>
#include <cstdint>
#include <string_view>

// The SQL lexer the statement classifiers share (sql/statement: what a pool tracks,
// sql/read_only: what a read/write split may send to a standby).
namespace pgproxy::sql {

enum class Tok : std::uint8_t {
  kIdent,        // unquoted identifier or keyword
  kQuotedIdent,  // "..." or U&"..."
  kString,       // '...', E'...', U&'...', B'', X'', N'', $tag$...$tag$
  kNumber,
  kParam,  // $1
  kPunct,  // one character: ( ) , ; = . * and operators
  kEnd,
};

struct Token {
  Tok type = Tok::kEnd;
  std::size_t begin = 0, end = 0;  // [begin, end) in the input
  char quote = 0;  // kString: '\'' standard, 'E' escaped, '$' dollar; kPunct: the character
};

inline bool isIdentStart(unsigned char c) {
  return (c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') || c == '_' || c >= 0x80;
}
inline bool isIdentCont(unsigned char c) {
  return isIdentStart(c) || (c >= '0' && c <= '9') || c == '$';
}
inline bool isSpace(unsigned char c) {
  return c == ' ' || c == '\t' || c == '\n' || c == '\r' || c == '\f' || c == '\v';
}
inline char lower(char c) {
  return c >= 'A' && c <= 'Z' ? static_cast<char>(c - 'A' + 'a') : c;
}

inline bool iequals(std::string_view a, std::string_view b) {
  if (a.size() != b.size()) {
    return false;
  }
  for (std::size_t i = 0; i < a.size(); ++i) {
    if (lower(a[i]) != lower(b[i])) {
      return false;
    }
  }
  return true;
}

// A PostgreSQL lexer reduced to what finding statement boundaries and keywords needs. Every
// construct that can hide a ';' or a keyword is consumed whole; an unterminated one runs to the
// end of the input, which is where PostgreSQL would report it.
class Lexer {
 public:
  explicit Lexer(std::string_view s) : s_(s) {}

  std::size_t pos() const { return pos_; }
  // Whether a quote, dollar quote or block comment ran to the end of the input unclosed.
  bool unterminated() const { return unterminated_; }

  Token next() {
    skipSpaceAndComments();
    Token t;
    t.begin = pos_;
    if (pos_ >= s_.size()) {
      t.type = Tok::kEnd;
      t.end = pos_;
      return t;
    }
    unsigned char c = static_cast<unsigned char>(s_[pos_]);
    unsigned char c1 = at(pos_ + 1);
    if ((c == 'u' || c == 'U') && c1 == '&' && (at(pos_ + 2) == '\'' || at(pos_ + 2) == '"')) {
      bool ident = at(pos_ + 2) == '"';
      pos_ += 2;
      ident ? skipQuoted('"') : skipQuoted('\'');
      t.type = ident ? Tok::kQuotedIdent : Tok::kString;
      t.quote = '\'';
    } else if ((c == 'e' || c == 'E') && c1 == '\'') {
      pos_ += 1;
      skipEscaped();
      t.type = Tok::kString;
      t.quote = 'E';
    } else if ((c == 'b' || c == 'B' || c == 'x' || c == 'X' || c == 'n' || c == 'N') &&
               c1 == '\'') {
      pos_ += 1;
      skipQuoted('\'');
      t.type = Tok::kString;
      t.quote = 'B';  // not a text literal pgproxy decodes
    } else if (isIdentStart(c)) {
      while (pos_ < s_.size() && isIdentCont(static_cast<unsigned char>(s_[pos_]))) {
        ++pos_;
      }
      t.type = Tok::kIdent;
    } else if (c == '"') {
      skipQuoted('"');
      t.type = Tok::kQuotedIdent;
    } else if (c == '\'') {
      skipQuoted('\'');
      t.type = Tok::kString;
      t.quote = '\'';
    } else if (c == '$') {
      lexDollar(t);
    } else if (c >= '0' && c <= '9') {
      while (pos_ < s_.size() &&
             (isIdentCont(static_cast<unsigned char>(s_[pos_])) || s_[pos_] == '.')) {
        ++pos_;
      }
      t.type = Tok::kNumber;
    } else {
      ++pos_;
      t.type = Tok::kPunct;
      t.quote = static_cast<char>(c);
    }
    t.end = pos_;
    return t;
  }

 private:
  unsigned char at(std::size_t i) const {
    return i < s_.size() ? static_cast<unsigned char>(s_[i]) : 0;
  }

  void skipSpaceAndComments() {
    while (pos_ < s_.size()) {
      char c = s_[pos_];
      if (isSpace(static_cast<unsigned char>(c))) {
        ++pos_;
      } else if (c == '-' && at(pos_ + 1) == '-') {
        while (pos_ < s_.size() && s_[pos_] != '\n' && s_[pos_] != '\r') {
          ++pos_;
        }
      } else if (c == '/' && at(pos_ + 1) == '*') {
        // PostgreSQL's block comments nest.
        std::size_t depth = 1;
        pos_ += 2;
        while (pos_ < s_.size() && depth > 0) {
          if (s_[pos_] == '/' && at(pos_ + 1) == '*') {
            ++depth;
            pos_ += 2;
          } else if (s_[pos_] == '*' && at(pos_ + 1) == '/') {
            --depth;
            pos_ += 2;
          } else {
            ++pos_;
          }
        }
        if (depth > 0) {
          unterminated_ = true;
        }
      } else {
        return;
      }
    }
  }

  // At the opening quote; a doubled quote stands for itself.
  void skipQuoted(char q) {
    ++pos_;
    while (pos_ < s_.size()) {
      if (s_[pos_] == q) {
        if (at(pos_ + 1) == static_cast<unsigned char>(q)) {
          pos_ += 2;
          continue;
        }
        ++pos_;
        return;
      }
      ++pos_;
    }
    unterminated_ = true;
  }

  // E'...': a backslash escapes the next character, the quote included.
  void skipEscaped() {
    ++pos_;
    while (pos_ < s_.size()) {
      char c = s_[pos_];
      if (c == '\\') {
        pos_ += 2;
        continue;
      }
      if (c == '\'') {
        if (at(pos_ + 1) == '\'') {
          pos_ += 2;
          continue;
        }
        ++pos_;
        return;
      }
      ++pos_;
    }
    pos_ = s_.size();
    unterminated_ = true;
  }

  // `$` starts a parameter ($1), a dollar quote ($$ or $tag$), or is an operator character.
  void lexDollar(Token& t) {
    std::size_t p = pos_ + 1;
    if (at(p) >= '0' && at(p) <= '9') {
      while (at(p) >= '0' && at(p) <= '9') {
        ++p;
      }
      pos_ = p;
      t.type = Tok::kParam;
      return;
    }
    if (isIdentStart(at(p))) {
      ++p;
      while (p < s_.size() && isIdentCont(at(p)) && at(p) != '$') {
        ++p;
      }
    }
    if (at(p) != '$') {
      ++pos_;
      t.type = Tok::kPunct;
      t.quote = '$';
      return;
    }
    std::string_view tag = s_.substr(pos_, p + 1 - pos_);
    std::size_t close = s_.find(tag, p + 1);
    if (close == std::string_view::npos) {
      pos_ = s_.size();
      unterminated_ = true;
    } else {
      pos_ = close + tag.size();
    }
    t.type = Tok::kString;
    t.quote = '$';
  }

  std::string_view s_;
  std::size_t pos_ = 0;
  bool unterminated_ = false;
};

}  // namespace pgproxy::sql
