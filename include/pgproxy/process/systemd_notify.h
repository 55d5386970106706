#pragma once

#include <string>

namespace pgproxy::process {

// Sends `state` ("READY=1", "RELOADING=1", "MAINPID=123", ...) to the service manager over
// $NOTIFY_SOCKET, as sd_notify(3) does. A no-op when not started by systemd. The protocol is one
// datagram on a Unix socket, so pgproxy needs no libsystemd for it.
void notifySystemd(const std::string& state);

}  // namespace pgproxy::process
