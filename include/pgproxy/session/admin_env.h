#pragma once

#include "pgproxy/admin/console.h"
#include "pgproxy/session/context.h"

namespace pgproxy::session {

// What the admin commands read and act on in this worker: its shared tables, the operators'
// switches and its master. One builder for the console sessions and the REST API, so that both
// see and change the same things.
admin::CommandEnv adminEnv(const Context& ctx);

}  // namespace pgproxy::session
