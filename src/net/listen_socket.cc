#include "pgproxy/net/listen_socket.h"

#include <arpa/inet.h>
#include <fcntl.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <sys/socket.h>

#include <cerrno>
#include <cstring>
#include <utility>

#include "pgproxy/base/text.h"

namespace pgproxy::net {

std::string describe(const config::ListenAddress& addr) {
  bool v6 = addr.address.find(':') != std::string::npos;
  return (v6 ? "[" + addr.address + "]" : addr.address) + ":" + std::to_string(addr.port);
}

socklen_t toSockaddr(const config::ListenAddress& addr, sockaddr_storage& ss) {
  ss = sockaddr_storage{};
  auto* v4 = reinterpret_cast<sockaddr_in*>(&ss);
  auto* v6 = reinterpret_cast<sockaddr_in6*>(&ss);
  if (inet_pton(AF_INET, addr.address.c_str(), &v4->sin_addr) == 1) {
    v4->sin_family = AF_INET;
    v4->sin_port = htons(addr.port);
    return sizeof(*v4);
  }
  if (inet_pton(AF_INET6, addr.address.c_str(), &v6->sin6_addr) == 1) {
    v6->sin6_family = AF_INET6;
    v6->sin6_port = htons(addr.port);
    return sizeof(*v6);
  }
  return 0;
}

base::Result<base::UniqueFd> bindListener(const config::ListenAddress& addr) {
  sockaddr_storage ss{};
  socklen_t len = toSockaddr(addr, ss);
  if (len == 0) {
    return base::Error{"listen address " + describe(addr) + " is not an IP address"};
  }
  base::UniqueFd fd(::socket(ss.ss_family, SOCK_STREAM | SOCK_NONBLOCK | SOCK_CLOEXEC, 0));
  if (!fd.valid()) {
    return base::Error{"socket() for " + describe(addr) + ": " + base::errnoText(errno)};
  }
  int one = 1;
  ::setsockopt(fd.get(), SOL_SOCKET, SO_REUSEADDR, &one, sizeof(one));
  if (ss.ss_family == AF_INET6) {
    // "::" then means IPv6 only, so "0.0.0.0" and "::" can both be listed.
    ::setsockopt(fd.get(), IPPROTO_IPV6, IPV6_V6ONLY, &one, sizeof(one));
  }
  if (::bind(fd.get(), reinterpret_cast<sockaddr*>(&ss), len) != 0) {
    return base::Error{"cannot listen on " + describe(addr) + ": bind: " + base::errnoText(errno)};
  }
  if (::listen(fd.get(), 4096) != 0) {
    return base::Error{"cannot listen on " + describe(addr) +
                       ": listen: " + base::errnoText(errno)};
  }
  return fd;
}

void tuneConnectedSocket(int fd, const config::Config& cfg) {
  int one = 1;
  ::setsockopt(fd, IPPROTO_TCP, TCP_NODELAY, &one, sizeof(one));
  const config::KeepAlive& ka = cfg.tcp_keepalive;
  int on = ka.enabled ? 1 : 0;
  ::setsockopt(fd, SOL_SOCKET, SO_KEEPALIVE, &on, sizeof(on));
  if (ka.enabled) {
    for (auto [opt, value] :
         {std::pair{TCP_KEEPIDLE, ka.idle_s}, std::pair{TCP_KEEPINTVL, ka.interval_s},
          std::pair{TCP_KEEPCNT, ka.count}}) {
      int v = static_cast<int>(value);
      if (v > 0) {
        ::setsockopt(fd, IPPROTO_TCP, opt, &v, sizeof(v));
      }
    }
  }
  if (cfg.tcp_user_timeout_ms > 0) {
    unsigned ms = static_cast<unsigned>(cfg.tcp_user_timeout_ms);
    ::setsockopt(fd, IPPROTO_TCP, TCP_USER_TIMEOUT, &ms, sizeof(ms));
  }
}

}  // namespace pgproxy::net
