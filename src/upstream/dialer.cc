#include "pgproxy/upstream/dialer.h"

#include <event2/dns.h>
#include <event2/util.h>
#include <netinet/in.h>

#include <cstring>

#include "pgproxy/net/cidr.h"

namespace pgproxy::upstream {

void AddressList::assign(const evutil_addrinfo* ai) {
  count_ = 0;
  next_ = 0;
  for (; ai && count_ < kMax; ai = ai->ai_next) {
    if (ai->ai_socktype != SOCK_STREAM || !ai->ai_addr || ai->ai_addrlen > sizeof(addr_[0])) {
      continue;
    }
    bool seen = false;
    for (std::size_t i = 0; i < count_ && !seen; ++i) {
      seen = len_[i] == ai->ai_addrlen && std::memcmp(&addr_[i], ai->ai_addr, len_[i]) == 0;
    }
    if (!seen) {
      std::memcpy(&addr_[count_], ai->ai_addr, ai->ai_addrlen);
      len_[count_++] = static_cast<socklen_t>(ai->ai_addrlen);
    }
  }
}

const sockaddr* AddressList::next(socklen_t* len) {
  if (exhausted()) {
    return nullptr;
  }
  *len = len_[next_];
  return reinterpret_cast<const sockaddr*>(&addr_[next_++]);
}

std::string AddressList::current() const {
  return next_ == 0 ? "" : net::formatAddress(reinterpret_cast<const sockaddr*>(&addr_[next_ - 1]));
}

void Lookup::start(Lookup** slot, evdns_base* dns, const std::string& host, int port, Done done,
                   void* owner) {
  auto* lookup = new Lookup(slot, done, owner);
  *slot = lookup;
  evutil_addrinfo hints{};
  hints.ai_family = AF_UNSPEC;
  hints.ai_socktype = SOCK_STREAM;
  hints.ai_protocol = IPPROTO_TCP;
  std::string service = std::to_string(port);
  // Numeric addresses and /etc/hosts answers come back before evdns_getaddrinfo returns; the
  // lookup is then over and only start() may free it (onResult must not).
  evdns_getaddrinfo_request* request =
      evdns_getaddrinfo(dns, host.c_str(), service.c_str(), &hints, onResult, lookup);
  if (lookup->finished_) {
    delete lookup;
    return;
  }
  lookup->starting_ = false;
  lookup->request_ = request;
}

void Lookup::cancel() {
  if (slot_) {
    *slot_ = nullptr;
    slot_ = nullptr;
  }
  owner_ = nullptr;
  if (request_) {
    evdns_getaddrinfo_cancel(request_);  // onResult still runs, later, with EVUTIL_EAI_CANCEL
  }
}

void Lookup::onResult(int err, evutil_addrinfo* ai, void* arg) {
  auto* lookup = static_cast<Lookup*>(arg);
  lookup->request_ = nullptr;
  if (lookup->slot_) {
    *lookup->slot_ = nullptr;
    lookup->slot_ = nullptr;
  }
  if (lookup->owner_) {
    void* owner = lookup->owner_;
    lookup->owner_ = nullptr;
    lookup->done_(owner, err, ai);
  }
  if (ai) {
    evutil_freeaddrinfo(ai);
  }
  if (lookup->starting_) {
    lookup->finished_ = true;
  } else {
    delete lookup;
  }
}

}  // namespace pgproxy::upstream
