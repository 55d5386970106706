#include "pgproxy/auth/saslprep.h"

#include <openssl/crypto.h>
#include <stringprep.h>

#include <cstdint>
#include <cstdlib>
#include <vector>

namespace pgproxy::auth {
namespace {

// libidn's tables end with an all-zero element; `end` is 0 for a single code point.
bool inTable(const Stringprep_table_element* table, std::uint32_t c) {
  for (const Stringprep_table_element* e = table; e->start || e->end; ++e) {
    std::uint32_t last = e->end ? e->end : e->start;
    if (c >= e->start && c <= last) {
      return true;
    }
  }
  return false;
}

// RFC 4013 section 2.3: what may not appear (checked, as PostgreSQL does, on the mapped input).
bool prohibited(std::uint32_t c) {
  for (const Stringprep_table_element* t :
       {stringprep_rfc3454_C_1_2, stringprep_rfc3454_C_2_1, stringprep_rfc3454_C_2_2,
        stringprep_rfc3454_C_3, stringprep_rfc3454_C_4, stringprep_rfc3454_C_5,
        stringprep_rfc3454_C_6, stringprep_rfc3454_C_7, stringprep_rfc3454_C_8,
        stringprep_rfc3454_C_9, stringprep_rfc3454_A_1}) {
    if (inTable(t, c)) {
      return true;
    }
  }
  return false;
}

// Well-formed UTF-8 (Unicode's table 3-7, PostgreSQL's pg_utf8_islegal): no overlong forms, no
// surrogates, nothing past U+10FFFF. NUL is refused too: PostgreSQL's passwords are C strings.
bool decodeUtf8(std::string_view in, std::vector<std::uint32_t>& out) {
  std::size_t i = 0;
  while (i < in.size()) {
    auto b = static_cast<unsigned char>(in[i]);
    std::size_t len;
    std::uint32_t c;
    unsigned char lo = 0x80, hi = 0xBF;  // the allowed range of the second byte
    if (b == 0) {
      return false;
    } else if (b < 0x80) {
      out.push_back(b);
      ++i;
      continue;
    } else if (b >= 0xC2 && b <= 0xDF) {
      len = 2;
      c = b & 0x1F;
    } else if (b >= 0xE0 && b <= 0xEF) {
      len = 3;
      c = b & 0x0F;
      lo = b == 0xE0 ? 0xA0 : 0x80;
      hi = b == 0xED ? 0x9F : 0xBF;
    } else if (b >= 0xF0 && b <= 0xF4) {
      len = 4;
      c = b & 0x07;
      lo = b == 0xF0 ? 0x90 : 0x80;
      hi = b == 0xF4 ? 0x8F : 0xBF;
    } else {
      return false;
    }
    if (in.size() - i < len) {
      return false;
    }
    for (std::size_t k = 1; k < len; ++k) {
      auto cb = static_cast<unsigned char>(in[i + k]);
      if (k == 1 ? (cb < lo || cb > hi) : (cb < 0x80 || cb > 0xBF)) {
        return false;
      }
      c = c << 6 | (cb & 0x3F);
    }
    out.push_back(c);
    i += len;
  }
  return true;
}

void appendUtf8(std::string& out, std::uint32_t c) {
  if (c < 0x80) {
    out += static_cast<char>(c);
  } else if (c < 0x800) {
    out += static_cast<char>(0xC0 | c >> 6);
    out += static_cast<char>(0x80 | (c & 0x3F));
  } else if (c < 0x10000) {
    out += static_cast<char>(0xE0 | c >> 12);
    out += static_cast<char>(0x80 | (c >> 6 & 0x3F));
    out += static_cast<char>(0x80 | (c & 0x3F));
  } else {
    out += static_cast<char>(0xF0 | c >> 18);
    out += static_cast<char>(0x80 | (c >> 12 & 0x3F));
    out += static_cast<char>(0x80 | (c >> 6 & 0x3F));
    out += static_cast<char>(0x80 | (c & 0x3F));
  }
}

}  // namespace

SaslPrepResult saslPrep(std::string_view input, std::string& output) {
  bool ascii = true;
  for (char ch : input) {
    ascii = ascii && static_cast<unsigned char>(ch) < 0x80 && ch != '\0';
  }
  if (ascii) {
    output.assign(input);
    return SaslPrepResult::kOk;
  }
  std::vector<std::uint32_t> chars;
  // The code points are the password's: wiped when they go (the buffer is never reallocated
  // after decoding, which only appends to it).
  struct Wipe {
    std::vector<std::uint32_t>& v;
    ~Wipe() { OPENSSL_cleanse(v.data(), v.capacity() * sizeof(std::uint32_t)); }
  } wipe{chars};
  chars.reserve(input.size());
  if (!decodeUtf8(input, chars)) {
    return SaslPrepResult::kInvalidUtf8;
  }
  // 1. Map: non-ASCII spaces become SPACE; "commonly mapped to nothing" goes.
  std::size_t n = 0;
  for (std::uint32_t c : chars) {
    if (inTable(stringprep_rfc3454_C_1_2, c)) {
      chars[n++] = 0x20;
    } else if (!inTable(stringprep_rfc3454_B_1, c)) {
      chars[n++] = c;
    }
  }
  chars.resize(n);
  if (chars.empty()) {
    return SaslPrepResult::kProhibited;  // PostgreSQL: no empty password
  }
  // 3. Prohibit (and unassigned code points) and 4. the bidi rule of RFC 3454 section 6, on the
  // mapped input like PostgreSQL (see the header).
  bool rtl = false, ltr = false;
  for (std::uint32_t c : chars) {
    if (prohibited(c)) {
      return SaslPrepResult::kProhibited;
    }
    rtl = rtl || inTable(stringprep_rfc3454_D_1, c);
    ltr = ltr || inTable(stringprep_rfc3454_D_2, c);
  }
  if (rtl && (ltr || !inTable(stringprep_rfc3454_D_1, chars.front()) ||
              !inTable(stringprep_rfc3454_D_1, chars.back()))) {
    return SaslPrepResult::kProhibited;
  }
  // 2. Normalize: NFKC.
  std::uint32_t* normalized =
      stringprep_ucs4_nfkc_normalize(chars.data(), static_cast<ssize_t>(chars.size()));
  if (!normalized) {
    return SaslPrepResult::kProhibited;  // out of memory: the password is used as given
  }
  output.clear();
  const std::uint32_t* p = normalized;
  for (; *p; ++p) {
    appendUtf8(output, *p);
  }
  OPENSSL_cleanse(normalized, static_cast<std::size_t>(p - normalized) * sizeof(std::uint32_t));
  std::free(normalized);
  return SaslPrepResult::kOk;
}

std::string scramPassword(std::string_view password) {
  std::string prepared;
  if (saslPrep(password, prepared) == SaslPrepResult::kOk) {
    return prepared;
  }
  return std::string(password);
}

}  // namespace pgproxy::auth
