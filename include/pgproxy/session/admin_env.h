#pragma once

#include "pgproxy/admin/console.h"
#include "pgproxy/session/context.h"

namespace pgproxy::session {

// What the admin commands read and act on in this worker: its shared tables, the operators'
// switches and its master. One builder for the console sessions and the REST API, so that both
// see and change the same things.
admin::CommandEnv adminEnv(const Context& ctx);

// This worker's answer on its control socket: its sessions, its server connections, or the
// sessions it closed for KILL.
admin::ControlReply answerControl(Context& ctx, const admin::ControlRequest& r);

}  // namespace pgproxy::session
