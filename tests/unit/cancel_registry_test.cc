#include "pgproxy/cancel/registry.h"
#include "pgproxy/net/cidr.h"

#include <arpa/inet.h>
#include <gtest/gtest.h>
#include <sys/mman.h>
#include <sys/wait.h>
#include <unistd.h>

#include <cstring>

namespace pgproxy::cancel {
namespace {

class RegistryTest : public ::testing::Test {
 protected:
  void SetUp() override {
    mem_ = mmap(nullptr, Registry::bytesNeeded(), PROT_READ | PROT_WRITE,
                MAP_SHARED | MAP_ANONYMOUS, -1, 0);
    ASSERT_NE(mem_, MAP_FAILED);
    reg_ = std::make_unique<Registry>(mem_);
  }
  void TearDown() override { munmap(mem_, Registry::bytesNeeded()); }

  static BackendAddr backend(const char* ip, int port) {
    BackendAddr a{};
    a.v4.sin_family = AF_INET;
    a.v4.sin_port = htons(static_cast<std::uint16_t>(port));
    inet_pton(AF_INET, ip, &a.v4.sin_addr);
    return a;
  }
  static in6_addr client(const char* ip) {
    sockaddr_in sa{};
    sa.sin_family = AF_INET;
    inet_pton(AF_INET, ip, &sa.sin_addr);
    return net::clientKey(reinterpret_cast<sockaddr*>(&sa));
  }

  void* mem_ = nullptr;
  std::unique_ptr<Registry> reg_;
};

TEST_F(RegistryTest, KeyedLookup) {
  int s = reg_->claim(100);
  ASSERT_GE(s, 0);
  reg_->publishKey(s, 77, 0xabc, backend("10.0.0.1", 5432));
  BackendAddr out{};
  ASSERT_TRUE(reg_->findByKey(77, 0xabc, out));
  EXPECT_EQ(ntohs(out.v4.sin_port), 5432);
  EXPECT_FALSE(reg_->findByKey(77, 0xabd, out));
  reg_->release(s);
  EXPECT_FALSE(reg_->findByKey(77, 0xabc, out));
}

TEST_F(RegistryTest, ClientLookupDedupsBackendsAndCaps) {
  for (int i = 0; i < 10; ++i) {
    int s = reg_->claim(100);
    reg_->publishPassthrough(s, client("127.0.0.1"), backend("10.0.0.1", 5000 + i % 6));
  }
  int other = reg_->claim(100);
  reg_->publishPassthrough(other, client("127.0.0.2"), backend("10.0.0.9", 1));
  BackendAddr out[4];
  EXPECT_EQ(reg_->findByClient(client("127.0.0.1"), out, 4), 4u);
  BackendAddr many[16];
  EXPECT_EQ(reg_->findByClient(client("127.0.0.1"), many, 16), 6u);
  EXPECT_EQ(reg_->findByClient(client("127.0.0.2"), many, 16), 1u);
  EXPECT_EQ(reg_->findByClient(client("127.0.0.3"), many, 16), 0u);
}

TEST_F(RegistryTest, SeenAcrossProcessesAndSweptAfterOwnerDies) {
  pid_t child = fork();
  if (child == 0) {
    int s = reg_->claim(getpid());
    reg_->publishKey(s, 5, 6, backend("10.0.0.2", 1));
    _exit(0);
  }
  int status;
  waitpid(child, &status, 0);
  BackendAddr out{};
  EXPECT_TRUE(reg_->findByKey(5, 6, out));
  reg_->releaseOwner(child);
  EXPECT_FALSE(reg_->findByKey(5, 6, out));
  EXPECT_GE(reg_->claim(1), 0);
}

TEST_F(RegistryTest, FullTableRefusesClaim) {
  for (std::size_t i = 0; i < Registry::kSlots; ++i) {
    ASSERT_GE(reg_->claim(1), 0);
  }
  EXPECT_EQ(reg_->claim(1), -1);
  reg_->releaseOwner(1);
  EXPECT_GE(reg_->claim(1), 0);
}

}  // namespace
}  // namespace pgproxy::cancel
