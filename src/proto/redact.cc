#include "pgproxy/proto/redact.h"

#include <algorithm>
#include <cstddef>
#include <utility>
#include <vector>

namespace pgproxy::proto {
namespace {

bool isAlpha(unsigned char c) {
  return (c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z');
}
bool isDigit(unsigned char c) {
  return c >= '0' && c <= '9';
}
// PostgreSQL's scanner: identifiers start with a letter, '_' or any byte >= 0x80, and go on
// with those, digits and '$'.
bool identStart(unsigned char c) {
  return isAlpha(c) || c == '_' || c >= 0x80;
}
bool identChar(unsigned char c) {
  return identStart(c) || isDigit(c) || c == '$';
}
bool isSpace(unsigned char c) {
  return c == ' ' || c == '\t' || c == '\n' || c == '\r' || c == '\f' || c == '\v';
}

bool isPasswordWord(std::string_view word) {
  constexpr std::string_view kWord = "password";
  if (word.size() != kWord.size()) {
    return false;
  }
  for (std::size_t i = 0; i < word.size(); ++i) {
    char c = word[i];
    if (c >= 'A' && c <= 'Z') {
      c = static_cast<char>(c - 'A' + 'a');
    }
    if (c != kWord[i]) {
      return false;
    }
  }
  return true;
}

// The end of a run quoted by `q` that opens at `i`: a doubled `q` stands for itself and, with
// `backslash`, so does anything after a backslash. Unterminated: the end of the text.
std::size_t skipQuoted(std::string_view s, std::size_t i, char q, bool backslash) {
  ++i;
  while (i < s.size()) {
    char c = s[i];
    if (backslash && c == '\\') {
      i += 2;
      continue;
    }
    if (c == q) {
      if (i + 1 < s.size() && s[i + 1] == q) {
        i += 2;
        continue;
      }
      return i + 1;
    }
    ++i;
  }
  return s.size();
}

// A dollar quote opening at `i` ($$ or $tag$, the tag an identifier without '$'): its end, or
// 0 when `i` does not open one ($1 is a parameter).
std::size_t skipDollarQuoted(std::string_view s, std::size_t i) {
  std::size_t j = i + 1;
  if (j < s.size() && identStart(static_cast<unsigned char>(s[j]))) {
    while (j < s.size() && s[j] != '$' && identChar(static_cast<unsigned char>(s[j]))) {
      ++j;
    }
  }
  if (j >= s.size() || s[j] != '$') {
    return 0;
  }
  std::string_view delimiter = s.substr(i, j - i + 1);
  std::size_t close = s.find(delimiter, j + 1);
  return close == std::string_view::npos ? s.size() : close + delimiter.size();
}

std::size_t skipBlockComment(std::string_view s, std::size_t i) {
  int depth = 0;  // PostgreSQL's block comments nest
  while (i < s.size()) {
    if (s.compare(i, 2, "/*") == 0) {
      ++depth;
      i += 2;
    } else if (s.compare(i, 2, "*/") == 0) {
      i += 2;
      if (--depth == 0) {
        return i;
      }
    } else {
      ++i;
    }
  }
  return s.size();
}

enum class Token { kSpace, kLiteral, kWord, kPasswordWord, kEquals, kOther };

// One token at `i`: its kind, and its end in `end`.
Token next(std::string_view s, std::size_t i, bool backslash, std::size_t& end) {
  auto c = static_cast<unsigned char>(s[i]);
  auto at = [&](std::size_t k) -> unsigned char {
    return k < s.size() ? static_cast<unsigned char>(s[k]) : 0;
  };
  if (isSpace(c)) {
    end = i + 1;
    while (end < s.size() && isSpace(static_cast<unsigned char>(s[end]))) {
      ++end;
    }
    return Token::kSpace;
  }
  if (c == '-' && at(i + 1) == '-') {
    std::size_t nl = s.find('\n', i);
    end = nl == std::string_view::npos ? s.size() : nl;
    return Token::kSpace;
  }
  if (c == '/' && at(i + 1) == '*') {
    end = skipBlockComment(s, i);
    return Token::kSpace;
  }
  if (c == '\'') {
    end = skipQuoted(s, i, '\'', backslash);
    return Token::kLiteral;
  }
  if ((c == 'E' || c == 'e') && at(i + 1) == '\'') {
    end = skipQuoted(s, i + 1, '\'', true);
    return Token::kLiteral;
  }
  if ((c == 'N' || c == 'n' || c == 'B' || c == 'b' || c == 'X' || c == 'x') && at(i + 1) == '\'') {
    end = skipQuoted(s, i + 1, '\'', backslash);
    return Token::kLiteral;
  }
  if ((c == 'U' || c == 'u') && at(i + 1) == '&' && (at(i + 2) == '\'' || at(i + 2) == '"')) {
    end = skipQuoted(s, i + 2, static_cast<char>(at(i + 2)), false);
    bool word = at(i + 2) == '"' && end - (i + 2) == 10 && s.substr(i + 3, 8) == "password";
    return at(i + 2) == '\'' ? Token::kLiteral : word ? Token::kPasswordWord : Token::kWord;
  }
  if (c == '"') {
    end = skipQuoted(s, i, '"', false);
    // Quoted identifiers keep their case: only "password" is the option name.
    return end - i == 10 && s.substr(i + 1, 8) == "password" ? Token::kPasswordWord : Token::kWord;
  }
  if (c == '$') {
    end = skipDollarQuoted(s, i);
    if (end != 0) {
      return Token::kLiteral;
    }
    end = i + 1;
    while (end < s.size() && isDigit(static_cast<unsigned char>(s[end]))) {
      ++end;
    }
    return Token::kOther;
  }
  if (identStart(c)) {
    end = i + 1;
    while (end < s.size() && identChar(static_cast<unsigned char>(s[end]))) {
      ++end;
    }
    return isPasswordWord(s.substr(i, end - i)) ? Token::kPasswordWord : Token::kWord;
  }
  if (isDigit(c) || (c == '.' && isDigit(at(i + 1)))) {
    end = i + 1;
    while (end < s.size() &&
           (isAlpha(static_cast<unsigned char>(s[end])) ||
            isDigit(static_cast<unsigned char>(s[end])) || s[end] == '.' || s[end] == '_')) {
      ++end;
    }
    return Token::kLiteral;
  }
  end = i + 1;
  return c == '=' ? Token::kEquals : Token::kOther;
}

using Spans = std::vector<std::pair<std::size_t, std::size_t>>;

// Adds the spans of `s` (offset by `base`) that hold a literal right after PASSWORD (`all`: every
// literal).
void findSecrets(std::string_view s, std::size_t base, bool backslash, bool all, Spans& out) {
  enum { kNone, kAfterWord, kAfterEquals } state = kNone;
  std::size_t i = 0;
  while (i < s.size()) {
    std::size_t end = i + 1;
    Token t = next(s, i, backslash, end);
    switch (t) {
      case Token::kSpace:
        break;  // whitespace and comments leave the state as it is
      case Token::kPasswordWord:
        state = kAfterWord;
        break;
      case Token::kEquals:
        state = state == kAfterWord ? kAfterEquals : kNone;
        break;
      case Token::kLiteral:
        if (state != kNone || all) {
          out.emplace_back(base + i, base + end);
        }
        state = kNone;
        break;
      case Token::kWord:
      case Token::kOther:
        state = kNone;
        break;
    }
    i = end;
  }
}

// What both redactions share: the literals findSecrets picks, replaced by `mask`.
std::string redact(std::string_view sql, bool all, std::string_view mask) {
  Spans spans;
  std::size_t start = 0;
  while (start <= sql.size()) {
    std::size_t nul = sql.find('\0', start);
    std::size_t stop = nul == std::string_view::npos ? sql.size() : nul;
    std::string_view statement = sql.substr(start, stop - start);
    for (bool backslash : {false, true}) {
      findSecrets(statement, start, backslash, all, spans);
    }
    start = stop + 1;
  }
  if (spans.empty()) {
    return std::string(sql);
  }
  std::sort(spans.begin(), spans.end());
  std::string out;
  out.reserve(sql.size());
  std::size_t copied = 0;
  for (std::size_t k = 0; k < spans.size();) {
    std::size_t begin = spans[k].first, end = spans[k].second;
    for (++k; k < spans.size() && spans[k].first < end; ++k) {
      end = std::max(end, spans[k].second);  // the two passes may disagree on where it ends
    }
    out.append(sql.substr(copied, begin - copied));
    out.append(mask);
    copied = end;
  }
  out.append(sql.substr(copied));
  return out;
}

}  // namespace

std::string redactPasswords(std::string_view sql) {
  return redact(sql, false, "'***'");
}

std::string redactLiterals(std::string_view sql) {
  return redact(sql, true, "?");
}

}  // namespace pgproxy::proto
