#include "pgproxy/pool/link.h"

#include <algorithm>

#include "pgproxy/proto/wire.h"

namespace pgproxy::pool {

ClientFlow::Fed ClientFlow::feed(std::string_view bytes) {
  Fed fed;
  if (terminated_) {
    fed.terminate = true;  // nothing may follow a Terminate; what does is dropped
    return fed;
  }
  std::size_t i = 0;
  while (i < bytes.size()) {
    if (remaining_ == 0) {
      if (header_have_ == 0 && bytes[i] == 'X') {
        terminated_ = true;
        fed.forward = i;
        fed.terminate = true;
        return fed;
      }
      header_[header_have_++] = bytes[i++];
      if (header_have_ < 5) {
        continue;
      }
      header_have_ = 0;
      std::uint32_t len = proto::readU32(header_ + 1);
      if (len < 4) {
        fed.bad = true;
        return fed;
      }
      remaining_ = len - 4;
      switch (header_[0]) {
        case 'Q':
        case 'F':
          ++owed_;
          break;
        case 'S':
          ++owed_;
          unsynced_ = false;
          break;
        case 'P':
        case 'B':
        case 'E':
        case 'D':
        case 'C':
        case 'H':
          unsynced_ = true;
          break;
        default:
          break;  // copy data and the like: answered within the query they belong to
      }
      if (remaining_ == 0) {
        continue;
      }
    }
    std::size_t n = std::min<std::size_t>(remaining_, bytes.size() - i);
    i += n;
    remaining_ -= static_cast<std::uint32_t>(n);
  }
  fed.forward = bytes.size();
  return fed;
}

Release releaseAfterReady(config::PoolMode mode, char status, const ClientFlow& client) {
  if (mode == config::PoolMode::kSession || !client.quiet()) {
    return Release::kKeep;
  }
  if (status == 'I') {
    return Release::kRelease;
  }
  return mode == config::PoolMode::kStatement ? Release::kStatementInTransaction : Release::kKeep;
}

bool aboveShare(const PoolShare& s) {
  std::uint64_t my_demand = (s.mine > s.my_idle ? s.mine - s.my_idle : 0) + s.my_waiting;
  if (my_demand == 0) {
    return s.mine > 0;
  }
  std::uint64_t demand = (s.all > s.all_idle ? s.all - s.all_idle : 0) + s.all_waiting;
  if (demand <= my_demand) {
    return false;  // nobody else wants one (or their counts are not in yet)
  }
  std::uint64_t share = (std::uint64_t{s.size} * my_demand + demand - 1) / demand;
  return s.mine > share;
}

}  // namespace pgproxy::pool
