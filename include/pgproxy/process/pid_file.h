#pragma once

#include <sys/types.h>

#include <string>

#include "pgproxy/base/result.h"

namespace pgproxy::process {

// The pid of the live pgproxy master recorded in `path`, or an error saying why there is none.
base::Result<pid_t> readLivePid(const std::string& path);
// Writes our pid, refusing when the file names another live pgproxy.
base::Status writePidFile(const std::string& path);
// Removes the file if it still names `pid` (a newer master may have replaced it).
void removePidFile(const std::string& path, pid_t pid);

}  // namespace pgproxy::process
