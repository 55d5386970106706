#include "pgproxy/process/cli.h"

#include <getopt.h>

#include <csignal>

#include "config.h"

namespace pgproxy::process {

const std::vector<OptionSpec>& optionTable() {
  static const std::vector<OptionSpec> table = {
      {'c', "FILE", "use FILE as the configuration file"},
      {'t', nullptr, "test the configuration (syntax, keys, addresses) and exit"},
      {'s', "SIGNAL", "send SIGNAL to the running master: stop, quit, reload, reopen, upgrade"},
      {'p', "PIDFILE", "pid file to use with -s instead of the configured pid_file"},
      {'d', nullptr, "detach from the terminal and run in the background"},
      {'V', nullptr, "print the version and exit"},
      {'h', nullptr, "print this help and exit"},
  };
  return table;
}

const std::vector<SignalSpec>& signalTable() {
  static const std::vector<SignalSpec> table = {
      {"stop", SIGTERM, "fast shutdown: close every connection and exit"},
      {"quit", SIGQUIT, "graceful shutdown: stop accepting, let sessions finish, exit"},
      {"reload", SIGHUP, "re-read the configuration and roll the workers"},
      {"reopen", SIGUSR1, "reopen log files"},
      {"upgrade", SIGUSR2, "re-execute the binary, handing over the listening sockets"},
  };
  return table;
}

const SignalSpec* findSignal(const std::string& name) {
  for (const auto& s : signalTable()) {
    if (name == s.name) {
      return &s;
    }
  }
  return nullptr;
}

std::string defaultConfigPath() {
  return std::string(PGPROXY_SYSCONFDIR) + "/pgproxy/pgproxy.yaml";
}

std::string usageText() {
  std::string out =
      "usage: pgproxy [-c FILE | FILE] [-t] [-s SIGNAL] [-p PIDFILE] [-d] [-V] [-h]\n\n";
  for (const auto& o : optionTable()) {
    std::string left =
        std::string("  -") + o.name + (o.argument ? std::string(" ") + o.argument : "");
    left.resize(16, ' ');
    out += left + o.help + "\n";
  }
  out += "\nThe configuration file is, in order: -c FILE, a FILE argument, $CONFIG_PATH, " +
         defaultConfigPath() + "\n";
  return out;
}

base::Result<Options> parseCommandLine(int argc, char** argv, const char* config_path_env) {
  std::string spec = ":";
  for (const auto& o : optionTable()) {
    spec += o.name;
    if (o.argument) {
      spec += ':';
    }
  }
  Options opts;
  opts.argv.assign(argv, argv + argc);
  std::string flagConfig;
  optind = 0;  // 0, not 1: makes glibc reset its scanning state between calls
  opterr = 0;
  int c;
  while ((c = getopt(argc, argv, spec.c_str())) != -1) {
    switch (c) {
      case 'c':
        flagConfig = optarg;
        break;
      case 't':
        opts.test_config = true;
        break;
      case 's':
        opts.signal = optarg;
        if (!findSignal(opts.signal)) {
          return base::Error{"unknown signal \"" + opts.signal +
                             "\" for -s: use stop, quit, reload, reopen or upgrade"};
        }
        break;
      case 'p':
        opts.pid_file = optarg;
        break;
      case 'd':
        opts.detach = true;
        break;
      case 'V':
        opts.version = true;
        break;
      case 'h':
        opts.help = true;
        break;
      case ':':
        return base::Error{std::string("option -") + static_cast<char>(optopt) +
                           " needs an argument"};
      default:
        return base::Error{std::string("unknown option -") + static_cast<char>(optopt)};
    }
  }
  if (argc - optind > 1) {
    return base::Error{"too many arguments: give at most one configuration file"};
  }
  std::string positional = optind < argc ? argv[optind] : "";
  if (!flagConfig.empty() && !positional.empty()) {
    return base::Error{"give the configuration file either with -c or as an argument, not both"};
  }
  if (!flagConfig.empty()) {
    opts.config_path = flagConfig;
  } else if (!positional.empty()) {
    opts.config_path = positional;
  } else if (config_path_env && *config_path_env) {
    opts.config_path = config_path_env;
  } else {
    opts.config_path = defaultConfigPath();
  }
  return opts;
}

}  // namespace pgproxy::process
