#include <cstdio>
#include <cstdlib>

#include "config.h"
#include "pgproxy/process/cli.h"
#include "pgproxy/process/master.h"

int main(int argc, char** argv) {
  using namespace pgproxy::process;
  auto opts = parseCommandLine(argc, argv, std::getenv("CONFIG_PATH"));
  if (!opts) {
    std::fprintf(stderr, "pgproxy: %s\n\n%s", opts.error().message.c_str(), usageText().c_str());
    return 2;
  }
  if (opts->help) {
    std::fputs(usageText().c_str(), stdout);
    return 0;
  }
  if (opts->version) {
    std::printf("pgproxy %s\n", PACKAGE_VERSION);
    return 0;
  }
  if (opts->test_config) {
    return testConfig(*opts);
  }
  if (!opts->signal.empty()) {
    return sendSignal(*opts);
  }
  return runMaster(*opts);
}
