#pragma once

#include <string>
#include <vector>

#include "pgproxy/base/result.h"

namespace pgproxy::process {

// The command-line options: this table drives getopt, the usage text, and a test that checks the
// man page documents every option.
struct OptionSpec {
  char name;
  const char* argument;  // nullptr for a flag
  const char* help;
};
const std::vector<OptionSpec>& optionTable();

// Signals a running master accepts, by their `-s` names. Shared by `-s` and the master's handlers.
struct SignalSpec {
  const char* name;
  int signo;
  const char* effect;
};
const std::vector<SignalSpec>& signalTable();
const SignalSpec* findSignal(const std::string& name);

struct Options {
  std::string config_path;   // resolved: -c, positional, $CONFIG_PATH, or the compiled-in default
  std::string pid_file;      // -p
  std::string signal;        // -s
  bool test_config = false;  // -t
  bool detach = false;       // -d
  bool version = false;      // -V
  bool help = false;         // -h
  std::vector<std::string> argv;  // as given, for re-executing on upgrade
};

// Pure: argv and the CONFIG_PATH value (may be null) in, Options or a usage error out.
base::Result<Options> parseCommandLine(int argc, char** argv, const char* config_path_env);
std::string usageText();
std::string defaultConfigPath();

}  // namespace pgproxy::process
