#include "pgproxy/cancel/registry.h"
#include "pgproxy/net/cidr.h"

#include <arpa/inet.h>
#include <gtest/gtest.h>
#include <sys/mman.h>
#include <sys/wait.h>
#include <unistd.h>

#include <cstring>
#include <string>

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
  // A protocol 3.0 key: 4 bytes, as on the wire.
  static std::string key4(std::uint32_t v) {
    return std::string{static_cast<char>(v >> 24), static_cast<char>(v >> 16),
                       static_cast<char>(v >> 8), static_cast<char>(v)};
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
  reg_->publishKey(s, 77, key4(0xabc), backend("10.0.0.1", 5432));
  Registry::Target out{};
  ASSERT_TRUE(reg_->findByKey(77, key4(0xabc), out));
  EXPECT_EQ(ntohs(out.backend.v4.sin_port), 5432);
  EXPECT_FALSE(reg_->findByKey(77, key4(0xabd), out));
  EXPECT_FALSE(reg_->findByKey(78, key4(0xabc), out));
  reg_->release(s);
  EXPECT_FALSE(reg_->findByKey(77, key4(0xabc), out));
}

// Protocol 3.2 keys (PostgreSQL 18 sends 32 bytes; up to 256): matched exactly, length included.
TEST_F(RegistryTest, LongKeysMatchExactly) {
  std::string k32, k256;
  for (int i = 0; i < 32; ++i) {
    k32.push_back(static_cast<char>(i + 100));
  }
  for (int i = 0; i < 256; ++i) {
    k256.push_back(static_cast<char>(255 - i));
  }
  int a = reg_->claim(100), b = reg_->claim(100), c = reg_->claim(100);
  reg_->publishKey(a, 1, k32, backend("10.0.0.1", 1001));
  reg_->publishKey(b, 1, k256, backend("10.0.0.1", 1002));
  reg_->publishKey(c, 1, key4(0x64656667), backend("10.0.0.1", 1003));  // k32's first 4 bytes
  Registry::Target out{};
  ASSERT_TRUE(reg_->findByKey(1, k32, out));
  EXPECT_EQ(ntohs(out.backend.v4.sin_port), 1001);
  ASSERT_TRUE(reg_->findByKey(1, k256, out));
  EXPECT_EQ(ntohs(out.backend.v4.sin_port), 1002);
  ASSERT_TRUE(reg_->findByKey(1, k32.substr(0, 4), out));
  EXPECT_EQ(ntohs(out.backend.v4.sin_port), 1003);
  // A prefix, an extension, one flipped bit in the last byte: no match.
  EXPECT_FALSE(reg_->findByKey(1, k32.substr(0, 31), out));
  EXPECT_FALSE(reg_->findByKey(1, k32 + "x", out));
  std::string flipped = k256;
  flipped.back() ^= 1;
  EXPECT_FALSE(reg_->findByKey(1, flipped, out));
  EXPECT_FALSE(reg_->findByKey(2, k32, out));
  EXPECT_FALSE(reg_->findByKey(1, "", out));
  EXPECT_FALSE(reg_->findByKey(1, std::string(257, 'x'), out));
  // A key beyond 256 bytes is not stored (no backend sends one).
  int d = reg_->claim(100);
  reg_->publishKey(d, 3, std::string(257, 'y'), backend("10.0.0.1", 1004));
  EXPECT_FALSE(reg_->findByKey(3, std::string(257, 'y'), out));
  EXPECT_FALSE(reg_->findByKey(3, std::string(256, 'y'), out));
  // A slot reused by a shorter key forgets the longer one.
  reg_->release(b);
  int e = reg_->claim(100);
  ASSERT_EQ(e, b);
  reg_->publishKey(e, 1, k256.substr(0, 8), backend("10.0.0.1", 1005));
  EXPECT_FALSE(reg_->findByKey(1, k256, out));
  ASSERT_TRUE(reg_->findByKey(1, k256.substr(0, 8), out));
  EXPECT_EQ(ntohs(out.backend.v4.sin_port), 1005);
}

TEST_F(RegistryTest, PooledClientCancelsOnlyItsLinkedServer) {
  int s = reg_->claim(100);
  reg_->publishPooled(s, 42, key4(0x1234));
  Registry::Target out{};
  ASSERT_TRUE(reg_->findByKey(42, key4(0x1234), out));
  EXPECT_TRUE(out.pooled);
  EXPECT_FALSE(out.linked);  // no server yet: the cancel is dropped
  reg_->linkPooled(s, backend("10.0.0.1", 6000), 777, 0xdeadbeef);
  ASSERT_TRUE(reg_->findByKey(42, key4(0x1234), out));
  EXPECT_TRUE(out.linked);
  EXPECT_EQ(ntohs(out.backend.v4.sin_port), 6000);
  EXPECT_EQ(out.server_pid, 777u);
  EXPECT_EQ(out.server_key, 0xdeadbeefu);
  EXPECT_FALSE(reg_->findByKey(777, key4(0xdeadbeef), out));  // the server's key is not ours
  reg_->unlinkPooled(s);
  ASSERT_TRUE(reg_->findByKey(42, key4(0x1234), out));
  EXPECT_FALSE(out.linked);
  reg_->release(s);
  EXPECT_FALSE(reg_->findByKey(42, key4(0x1234), out));
}

TEST_F(RegistryTest, ProxyHeaderFlagFollowsTheSession) {
  int keyed = reg_->claim(100), pooled = reg_->claim(100), pass = reg_->claim(100);
  reg_->publishKey(keyed, 7, key4(1), backend("10.0.0.1", 1), true);
  reg_->publishPooled(pooled, 8, key4(2), false);
  reg_->publishPassthrough(pass, client("127.0.0.9"), backend("10.0.0.2", 2), true);
  Registry::Target out{};
  ASSERT_TRUE(reg_->findByKey(7, key4(1), out));
  EXPECT_TRUE(out.proxy_header);
  ASSERT_TRUE(reg_->findByKey(8, key4(2), out));
  EXPECT_FALSE(out.proxy_header);
  BackendAddr addrs[2];
  bool proxy[2] = {false, false};
  ASSERT_EQ(reg_->findByClient(client("127.0.0.9"), addrs, 2, proxy), 1u);
  EXPECT_TRUE(proxy[0]);
}

TEST(IssuedKeys, TheInstanceIdRidesInThePid) {
  EXPECT_EQ(issuedPid(0xffffffffu, 0), 0x7fffffffu);  // no instance id: 31 random bits
  EXPECT_EQ(instanceOfPid(issuedPid(0xffffffffu, 0) & 0x00ffffff), 0u);
  for (unsigned id : {1u, 2u, 77u, 127u}) {
    std::uint32_t pid = issuedPid(0xdeadbeefu, id);
    EXPECT_EQ(instanceOfPid(pid), id);
    EXPECT_LT(pid, 0x80000000u);  // a positive int32, as clients read it
    EXPECT_EQ(pid & 0x00ffffff, 0xadbeefu);
  }
  EXPECT_EQ(instanceOfPid(4194303), 0u);  // Linux's largest pid is never an instance's
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
    reg_->publishKey(s, 5, std::string(32, '\x06'), backend("10.0.0.2", 1));
    _exit(0);
  }
  int status;
  waitpid(child, &status, 0);
  Registry::Target out{};
  EXPECT_TRUE(reg_->findByKey(5, std::string(32, '\x06'), out));
  reg_->releaseOwner(child);
  EXPECT_FALSE(reg_->findByKey(5, std::string(32, '\x06'), out));
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
