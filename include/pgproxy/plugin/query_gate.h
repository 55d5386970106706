#pragma once

#include <cstddef>
#include <cstdint>
#include <string>
#include <string_view>

#include "pgproxy/proto/wire.h"

namespace pgproxy::plugin {

// The client's stream of a pooled session on its way to on_query: Query and Parse messages are
// held until whole (at most kMaxHeld bytes), shown to a check that may pass them, put a comment
// before their SQL, or stop the session; every other message streams through as it comes (a
// COPY's data is never held). Pure and bounded.
class QueryGate {
 public:
  static constexpr std::size_t kMaxHeld = 1 << 20;
  enum class Result { kOk, kStopped, kTooLarge, kBad };

  // Appends to `out` the bytes that may go on now. `check(type, sql, note)` sees each whole
  // Query or Parse (`sql` its query text); it returns false to stop (nothing of that message or
  // after it goes on), and sets `note` to have "/* note */ " put before the SQL.
  template <typename Check>
  Result feed(std::string_view bytes, std::string& out, Check check);

  // The comment text as it is put in: no NUL, and no "*/" that would end the comment early.
  static std::string commentOf(std::string_view note);

 private:
  template <typename Check>
  Result release(std::string& out, Check check);

  char header_[5] = {};
  std::size_t header_have_ = 0;
  std::uint32_t passing_ = 0;  // body bytes of a streaming message still to come
  bool holding_ = false;       // held_ gathers a Query or Parse (its header included)
  std::uint32_t held_len_ = 0;
  std::string held_;
};

template <typename Check>
QueryGate::Result QueryGate::feed(std::string_view bytes, std::string& out, Check check) {
  std::size_t i = 0;
  while (i < bytes.size()) {
    if (passing_ > 0) {
      std::size_t n = std::min<std::size_t>(passing_, bytes.size() - i);
      out.append(bytes.substr(i, n));
      passing_ -= static_cast<std::uint32_t>(n);
      i += n;
      continue;
    }
    if (holding_) {
      std::size_t want = 1 + static_cast<std::size_t>(held_len_) - held_.size();
      std::size_t n = std::min(want, bytes.size() - i);
      held_.append(bytes.substr(i, n));
      i += n;
      if (held_.size() == 1 + static_cast<std::size_t>(held_len_)) {
        if (Result r = release(out, check); r != Result::kOk) {
          return r;
        }
      }
      continue;
    }
    header_[header_have_++] = bytes[i++];
    if (header_have_ < 5) {
      continue;
    }
    header_have_ = 0;
    std::uint32_t len = proto::readU32(header_ + 1);
    if (len < 4) {
      return Result::kBad;
    }
    if (header_[0] == 'Q' || header_[0] == 'P') {
      if (len > kMaxHeld) {
        return Result::kTooLarge;
      }
      holding_ = true;
      held_len_ = len;
      held_.assign(header_, 5);
      if (len == 4) {
        if (Result r = release(out, check); r != Result::kOk) {
          return r;
        }
      }
    } else {
      out.append(header_, 5);
      passing_ = len - 4;
    }
  }
  return Result::kOk;
}

template <typename Check>
QueryGate::Result QueryGate::release(std::string& out, Check check) {
  holding_ = false;
  std::string_view body = std::string_view(held_).substr(5);
  std::size_t sql_at = 0;
  if (held_[0] == 'P') {
    std::size_t nul = body.find('\0');
    sql_at = nul == std::string_view::npos ? body.size() : nul + 1;
  }
  std::string_view rest = body.substr(sql_at);
  std::size_t end = rest.find('\0');
  std::string_view sql = rest.substr(0, end == std::string_view::npos ? rest.size() : end);
  std::string note;
  if (!check(held_[0], sql, note)) {
    held_.clear();
    return Result::kStopped;
  }
  if (note.empty()) {
    out.append(held_);
  } else {
    std::string comment = "/* " + commentOf(note) + " */ ";
    std::string new_body;
    new_body.reserve(body.size() + comment.size());
    new_body.append(body.substr(0, sql_at));
    new_body.append(comment);
    new_body.append(body.substr(sql_at));
    out.append(proto::buildMessage(held_[0], new_body));
  }
  held_.clear();
  if (held_.capacity() > 64 * 1024) {
    std::string().swap(held_);  // a large query's buffer is not kept for the session's life
  }
  return Result::kOk;
}

}  // namespace pgproxy::plugin
