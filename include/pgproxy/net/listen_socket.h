#pragma once

#include <sys/socket.h>

#include <string>

#include "pgproxy/base/result.h"
#include "pgproxy/base/unique_fd.h"
#include "pgproxy/config/config.h"

namespace pgproxy::net {

// Binds and listens on one address. Done by the master; workers inherit the descriptor.
base::Result<base::UniqueFd> bindListener(const config::ListenAddress& addr);

// `addr` (an IP literal and a port) as a socket address; its length, 0 when it is not one.
socklen_t toSockaddr(const config::ListenAddress& addr, sockaddr_storage& ss);

// "address:port" with brackets for IPv6, for log lines.
std::string describe(const config::ListenAddress& addr);

// Options every proxied TCP connection gets: TCP_NODELAY (PostgreSQL traffic is small messages
// where Nagle only adds latency), and tcp_keepalive / tcp_user_timeout so that a peer that
// vanished without a FIN or RST is noticed.
void tuneConnectedSocket(int fd, const config::Config& cfg);

}  // namespace pgproxy::net
