// The shared memory a binary upgrade hands over: adopted only when the layout matches exactly.
#include "pgproxy/process/shared_regions.h"

#include <fcntl.h>
#include <gtest/gtest.h>
#include <sys/mman.h>
#include <unistd.h>

#include <cstring>
#include <string>

#include "pgproxy/cancel/registry.h"
#include "pgproxy/metrics/metrics.h"
#include "pgproxy/metrics/recorder.h"
#include "pgproxy/pool/shared_pools.h"

namespace pgproxy::process {
namespace {

TEST(SharedRegions, AdoptedRegionsAreTheSameMemory) {
  auto created = SharedRegions::create();
  ASSERT_TRUE(created.ok()) << created.error().message;
  metrics::Registry before(static_cast<metrics::Shared*>(created->metrics()));
  metrics::Recorder(before.claimSlot(42)).add(metrics::Counter::kAccepted, 7);
  cancel::Registry cancels(created->cancels());
  int slot = cancels.claim(42);
  ASSERT_GE(slot, 0);
  cancel::BackendAddr backend{};
  backend.v4.sin_family = AF_INET;
  backend.v4.sin_port = htons(5432);
  const std::string key(32, '\x5a');  // a protocol 3.2 key, as PostgreSQL 18 sends
  cancels.publishKey(slot, 1234, key, backend);
  pool::SharedPools pools(static_cast<pool::PoolsShared*>(created->pools()));
  pools.attach(3);
  std::size_t p = pools.openPool("a.example.com", "10.0.0.1:5432", "app", "appdb");
  ASSERT_NE(p, pool::kNoPool);
  ASSERT_TRUE(pools.tryAddServer(p, 10, pool::kNoPool, 0));

  // What the new binary does with the descriptor it inherits.
  auto adopted = SharedRegions::adopt(dup(created->fd()));
  ASSERT_TRUE(adopted.ok()) << adopted.error().message;
  EXPECT_NE(adopted->metrics(), created->metrics());  // its own mapping...
  metrics::Registry after(static_cast<metrics::Shared*>(adopted->metrics()));
  EXPECT_EQ(after.snapshot().counters[0], 7u);  // ...of the same counters
  cancel::Registry adoptedCancels(adopted->cancels());
  cancel::Registry::Target found{};
  EXPECT_TRUE(adoptedCancels.findByKey(1234, key, found));
  EXPECT_EQ(ntohs(found.backend.v4.sin_port), 5432);
  // A pool's cap goes on counting the previous binary's servers.
  pool::SharedPools adoptedPools(static_cast<pool::PoolsShared*>(adopted->pools()));
  adoptedPools.attach(4);
  EXPECT_EQ(adoptedPools.openPool("a.example.com", "10.0.0.1:5432", "app", "appdb"), p);
  EXPECT_EQ(adoptedPools.servers(p), 1u);
  metrics::Recorder(after.claimSlot(43)).add(metrics::Counter::kAccepted, 1);
  EXPECT_EQ(before.snapshot().counters[0], 8u);
}

TEST(SharedRegions, ADifferentLayoutIsNotAdopted) {
  auto created = SharedRegions::create();
  ASSERT_TRUE(created.ok()) << created.error().message;
  // The header's version follows its 16-byte magic: a binary with another layout version.
  std::uint32_t version;
  char* header = static_cast<char*>(created->cancels()) - 4096;
  std::memcpy(&version, header + 16, sizeof(version));
  EXPECT_EQ(version, SharedRegions::kLayoutVersion);
  std::uint32_t other = version + 1;
  std::memcpy(header + 16, &other, sizeof(other));
  auto r = SharedRegions::adopt(dup(created->fd()));
  ASSERT_FALSE(r.ok());
  EXPECT_NE(r.error().message.find("layout version " + std::to_string(other)), std::string::npos)
      << r.error().message;
  std::memcpy(header + 16, &version, sizeof(version));
  // Another region size (a table grew): named.
  std::uint64_t size;
  const std::size_t sizeAt = 16 + 4 + 4 + 8 + 6 * 8 + 8;  // size[1]: the metrics
  std::memcpy(&size, header + sizeAt, sizeof(size));
  EXPECT_EQ(size, metrics::Registry::bytesNeeded());
  std::uint64_t bigger = size + 64;
  std::memcpy(header + sizeAt, &bigger, sizeof(bigger));
  r = SharedRegions::adopt(dup(created->fd()));
  ASSERT_FALSE(r.ok());
  EXPECT_NE(r.error().message.find("the metrics has " + std::to_string(bigger)), std::string::npos)
      << r.error().message;
  std::memcpy(header + sizeAt, &size, sizeof(size));
  EXPECT_TRUE(SharedRegions::adopt(dup(created->fd())).ok());
}

TEST(SharedRegions, ForeignDescriptorsAreRefused) {
  // Not sealed: whoever holds it could shrink it under our mapping.
  int plain = memfd_create("not-pgproxy", MFD_CLOEXEC);
  ASSERT_GE(plain, 0);
  ASSERT_EQ(ftruncate(plain, 1 << 20), 0);
  auto r = SharedRegions::adopt(plain);
  ASSERT_FALSE(r.ok());
  EXPECT_NE(r.error().message.find("not a sealed memfd"), std::string::npos);
  // Sealed but with other contents.
  int sealed = memfd_create("not-pgproxy", MFD_CLOEXEC | MFD_ALLOW_SEALING);
  ASSERT_GE(sealed, 0);
  ASSERT_EQ(ftruncate(sealed, 1 << 20), 0);
  ASSERT_EQ(fcntl(sealed, F_ADD_SEALS, F_SEAL_SHRINK | F_SEAL_GROW), 0);
  r = SharedRegions::adopt(sealed);
  ASSERT_FALSE(r.ok());
  EXPECT_NE(r.error().message.find("not pgproxy's shared memory"), std::string::npos);
  // Not a descriptor at all.
  r = SharedRegions::adopt(987654);
  EXPECT_FALSE(r.ok());
}

}  // namespace
}  // namespace pgproxy::process
