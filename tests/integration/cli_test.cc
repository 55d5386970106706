// The command line against a running master: -t verdicts and -s signals.
#include <gtest/gtest.h>
#include <sys/stat.h>
#include <sys/wait.h>

#include "harness.h"

namespace pgproxy::it {
namespace {

std::string bin() {
  const char* b = std::getenv("PGPROXY_BIN");
  return b ? b : "./pgproxy";
}

bool exists(const std::string& path) {
  struct stat st;
  return stat(path.c_str(), &st) == 0;
}

TEST(CommandLine, TestConfigVerdicts) {
  std::string dir = tempDir("pgproxy-cli");
  writeFile(dir + "/good.yaml", "mappings: [{external: a.example.com, internal: 10.0.0.1}]\n");
  writeFile(dir + "/bad.yaml", "mappings:\n  - {external: a.example.com, internal: x, prot: 1}\n");
  auto good = run({bin(), "-t", "-c", dir + "/good.yaml"});
  EXPECT_EQ(good.exit_code, 0);
  EXPECT_NE(good.output.find("test is successful"), std::string::npos) << good.output;
  auto bad = run({bin(), "-t", dir + "/bad.yaml"});
  EXPECT_EQ(bad.exit_code, 1);
  EXPECT_NE(bad.output.find(dir + "/bad.yaml:2:"), std::string::npos) << bad.output;
  EXPECT_NE(bad.output.find("did you mean \"port\""), std::string::npos) << bad.output;
  EXPECT_NE(bad.output.find("test failed"), std::string::npos) << bad.output;
  auto missing = run({bin(), "-t", dir + "/missing.yaml"});
  EXPECT_EQ(missing.exit_code, 1);
  EXPECT_NE(missing.output.find("cannot open configuration file"), std::string::npos);
  // CONFIG_PATH chooses the file when no argument does.
  auto viaEnv = run({"env", "CONFIG_PATH=" + dir + "/good.yaml", bin(), "-t"});
  EXPECT_EQ(viaEnv.exit_code, 0) << viaEnv.output;
  run({"rm", "-rf", dir});
}

TEST(CommandLine, SignalStopShutsDownAndRemovesPidFile) {
  Proxy proxy("mappings: [{external: host1.example.com, internal: 127.0.0.1, port: {P1}}]\n");
  ASSERT_EQ(psql(proxy.tls("host1"), "select 1").exit_code, 0);
  ASSERT_TRUE(exists(proxy.pidFile()));
  EXPECT_EQ(std::stoi(readFile(proxy.pidFile())), proxy.pid());
  auto r = run({bin(), "-s", "stop", "-c", proxy.configPath()});
  EXPECT_EQ(r.exit_code, 0) << r.output;
  int status = proxy.waitExit(std::chrono::seconds(20));
  ASSERT_NE(status, -1) << "master did not exit";
  EXPECT_TRUE(WIFEXITED(status) && WEXITSTATUS(status) == 0);
  EXPECT_FALSE(exists(proxy.pidFile()));
  // No worker outlives the master.
  auto ps = run({"pgrep", "-f", proxy.configPath()});
  EXPECT_NE(ps.exit_code, 0) << ps.output;
  // With nothing running, -s is a clear error.
  auto again = run({bin(), "-s", "stop", "-c", proxy.configPath()});
  EXPECT_EQ(again.exit_code, 1);
  EXPECT_NE(again.output.find("is pgproxy running?"), std::string::npos) << again.output;
}

TEST(CommandLine, RefusesSecondInstanceOnSamePidFile) {
  Proxy proxy("mappings: [{external: host1.example.com, internal: 127.0.0.1, port: {P1}}]\n");
  auto r = run({bin(), "-c", proxy.configPath()}, std::chrono::seconds(20));
  EXPECT_EQ(r.exit_code, 1);
  EXPECT_NE(r.output.find("already running"), std::string::npos) << r.output;
  EXPECT_EQ(psql(proxy.tls("host1"), "select 1").exit_code, 0);
}

}  // namespace
}  // namespace pgproxy::it
