#include "pgproxy/process/cli.h"

#include <gtest/gtest.h>

#include <fstream>

namespace pgproxy::process {
namespace {

base::Result<Options> parse(std::vector<std::string> args, const char* env = nullptr) {
  std::vector<char*> argv;
  args.insert(args.begin(), "pgproxy");
  for (auto& a : args) {
    argv.push_back(a.data());
  }
  argv.push_back(nullptr);
  return parseCommandLine(static_cast<int>(args.size()), argv.data(), env);
}

TEST(Cli, ConfigPathPrecedence) {
  EXPECT_EQ(parse({"-c", "/a.yaml"}, "/env.yaml")->config_path, "/a.yaml");
  EXPECT_EQ(parse({"/b.yaml"}, "/env.yaml")->config_path, "/b.yaml");
  EXPECT_EQ(parse({}, "/env.yaml")->config_path, "/env.yaml");
  EXPECT_EQ(parse({}, "")->config_path, defaultConfigPath());
  EXPECT_EQ(parse({})->config_path, defaultConfigPath());
  EXPECT_FALSE(parse({"-c", "/a.yaml", "/b.yaml"}).ok());
  EXPECT_FALSE(parse({"/a.yaml", "/b.yaml"}).ok());
}

TEST(Cli, Flags) {
  auto o = parse({"-t", "-d", "-p", "/run/x.pid", "-s", "reload"});
  ASSERT_TRUE(o.ok());
  EXPECT_TRUE(o->test_config);
  EXPECT_TRUE(o->detach);
  EXPECT_EQ(o->pid_file, "/run/x.pid");
  EXPECT_EQ(o->signal, "reload");
  EXPECT_TRUE(parse({"-V"})->version);
  EXPECT_TRUE(parse({"-h"})->help);
}

TEST(Cli, Errors) {
  EXPECT_NE(parse({"-s", "explode"}).error().message.find("unknown signal"), std::string::npos);
  EXPECT_NE(parse({"-s"}).error().message.find("needs an argument"), std::string::npos);
  EXPECT_NE(parse({"-x"}).error().message.find("unknown option -x"), std::string::npos);
}

TEST(Cli, SignalTable) {
  for (const char* name : {"stop", "quit", "reload", "reopen", "upgrade"}) {
    EXPECT_NE(findSignal(name), nullptr) << name;
  }
}

TEST(Cli, ManPageDocumentsEveryOptionAndSignal) {
  std::ifstream in(std::string(PGPROXY_SRCDIR) + "/man/pgproxy.8");
  std::string man((std::istreambuf_iterator<char>(in)), std::istreambuf_iterator<char>());
  ASSERT_FALSE(man.empty());
  for (const auto& o : optionTable()) {
    EXPECT_NE(man.find(std::string("\\fB\\-") + o.name + "\\fR"), std::string::npos)
        << "-" << o.name << " is missing from man/pgproxy.8";
  }
  for (const auto& s : signalTable()) {
    EXPECT_NE(man.find(std::string("\\fB") + s.name + "\\fR"), std::string::npos)
        << s.name << " is missing from man/pgproxy.8";
  }
  std::string usage = usageText();
  for (const auto& o : optionTable()) {
    EXPECT_NE(usage.find(std::string("-") + o.name), std::string::npos);
  }
}

}  // namespace
}  // namespace pgproxy::process
