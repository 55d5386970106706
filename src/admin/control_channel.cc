#include "pgproxy/admin/control_channel.h"

#include <cstdio>

#include "pgproxy/proto/wire.h"

namespace pgproxy::admin {
namespace {

// Frame: u32 length (the whole frame, these 4 bytes included), u8 version, u8 kind or status,
// then the body.
constexpr std::size_t kHeader = 6;
constexpr std::uint32_t kNull = 0xffffffffu;

void appendU64(std::string& out, std::uint64_t v) {
  proto::appendU32(out, static_cast<std::uint32_t>(v >> 32));
  proto::appendU32(out, static_cast<std::uint32_t>(v));
}

std::uint64_t readU64(const char* p) {
  return static_cast<std::uint64_t>(proto::readU32(p)) << 32 | proto::readU32(p + 4);
}

std::string frame(std::uint8_t kind, const std::string& body) {
  std::string out;
  proto::appendU32(out, static_cast<std::uint32_t>(kHeader + body.size()));
  out.push_back(static_cast<char>(kControlVersion));
  out.push_back(static_cast<char>(kind));
  return out + body;
}

// The frame's length once its header is in; 0 when not yet.
Decoded header(std::string_view in, std::size_t max, std::size_t& len) {
  if (in.size() < kHeader) {
    return Decoded::kNeedMore;
  }
  len = proto::readU32(in.data());
  if (len < kHeader || len > max || static_cast<std::uint8_t>(in[4]) != kControlVersion) {
    return Decoded::kBad;
  }
  if (in.size() < len) {
    return Decoded::kNeedMore;
  }
  return in.size() == len ? Decoded::kDone : Decoded::kBad;
}

}  // namespace

std::string encodeRequest(const ControlRequest& r) {
  std::string body;
  appendU64(body, r.number);
  proto::appendU32(body, r.limit);
  body += r.name.substr(0, kMaxControlRequest - kHeader - 12);
  return frame(static_cast<std::uint8_t>(r.kind), body);
}

std::string encodeReply(const ControlReply& r) {
  std::string body;
  if (!r.error.empty()) {
    return frame(1, r.error);
  }
  proto::appendU32(body, static_cast<std::uint32_t>(r.rows.size()));
  for (const auto& row : r.rows) {
    body.push_back(static_cast<char>(row.size()));
    for (const Cell& c : row) {
      if (!c) {
        proto::appendU32(body, kNull);
        continue;
      }
      proto::appendU32(body, static_cast<std::uint32_t>(c->size()));
      body += *c;
    }
  }
  return frame(0, body);
}

Decoded decodeRequest(std::string_view in, ControlRequest& out) {
  std::size_t len = 0;
  Decoded d = header(in, kMaxControlRequest, len);
  if (d != Decoded::kDone) {
    return d;
  }
  auto kind = static_cast<std::uint8_t>(in[5]);
  if (kind < static_cast<std::uint8_t>(ControlKind::kClients) ||
      kind > static_cast<std::uint8_t>(ControlKind::kReconnect) || len < kHeader + 12) {
    return Decoded::kBad;
  }
  out.kind = static_cast<ControlKind>(kind);
  out.number = readU64(in.data() + kHeader);
  out.limit = proto::readU32(in.data() + kHeader + 8);
  out.name.assign(in.substr(kHeader + 12));
  return Decoded::kDone;
}

Decoded decodeReply(std::string_view in, ControlReply& out) {
  std::size_t len = 0;
  Decoded d = header(in, kMaxControlReply, len);
  if (d != Decoded::kDone) {
    return d;
  }
  std::string_view body = in.substr(kHeader);
  out = ControlReply{};
  if (in[5] == 1) {
    out.error.assign(body.empty() ? std::string_view("the worker refused") : body);
    return Decoded::kDone;
  }
  if (in[5] != 0 || body.size() < 4) {
    return Decoded::kBad;
  }
  std::uint32_t rows = proto::readU32(body.data());
  body.remove_prefix(4);
  // Each row takes at least its column count byte: a count the body cannot hold is a lie.
  if (rows > body.size()) {
    return Decoded::kBad;
  }
  out.rows.reserve(rows);
  for (std::uint32_t r = 0; r < rows; ++r) {
    if (body.empty()) {
      return Decoded::kBad;
    }
    auto cols = static_cast<std::uint8_t>(body[0]);
    body.remove_prefix(1);
    if (cols > kMaxControlColumns) {
      return Decoded::kBad;
    }
    std::vector<Cell> row;
    row.reserve(cols);
    for (std::uint8_t c = 0; c < cols; ++c) {
      if (body.size() < 4) {
        return Decoded::kBad;
      }
      std::uint32_t n = proto::readU32(body.data());
      body.remove_prefix(4);
      if (n == kNull) {
        row.emplace_back();
        continue;
      }
      if (n > body.size()) {
        return Decoded::kBad;
      }
      row.emplace_back(std::string(body.substr(0, n)));
      body.remove_prefix(n);
    }
    out.rows.push_back(std::move(row));
  }
  return body.empty() ? Decoded::kDone : Decoded::kBad;
}

std::string controlSocketName(std::uint64_t instance, std::size_t slot) {
  char name[64];
  std::snprintf(name, sizeof(name), "pgproxy-%016llx-%zu",
                static_cast<unsigned long long>(instance), slot);
  return name;
}

const std::vector<Column>& clientColumns() {
  static const std::vector<Column> columns = {{"id", ColumnType::kInt8},
                                              {"worker", ColumnType::kInt8},
                                              {"mapping", ColumnType::kText},
                                              {"user", ColumnType::kText},
                                              {"database", ColumnType::kText},
                                              {"state", ColumnType::kText},
                                              {"addr", ColumnType::kText},
                                              {"port", ColumnType::kInt8},
                                              {"tls", ColumnType::kText},
                                              {"connect_time", ColumnType::kTimestamp},
                                              {"backend", ColumnType::kText},
                                              {"server", ColumnType::kInt8},
                                              {"bytes_received", ColumnType::kInt8},
                                              {"bytes_sent", ColumnType::kInt8}};
  return columns;
}

const std::vector<Column>& serverColumns() {
  static const std::vector<Column> columns = {{"id", ColumnType::kInt8},
                                              {"worker", ColumnType::kInt8},
                                              {"mapping", ColumnType::kText},
                                              {"backend", ColumnType::kText},
                                              {"user", ColumnType::kText},
                                              {"database", ColumnType::kText},
                                              {"state", ColumnType::kText},
                                              {"client", ColumnType::kInt8},
                                              {"connect_time", ColumnType::kTimestamp},
                                              {"close_needed", ColumnType::kBool}};
  return columns;
}

}  // namespace pgproxy::admin
