#include "pgproxy/process/shared_regions.h"

#include <fcntl.h>
#include <sys/mman.h>
#include <sys/stat.h>

#include <array>
#include <cerrno>
#include <cstring>
#include <utility>

#include "pgproxy/admin/control.h"
#include "pgproxy/base/text.h"
#include "pgproxy/cancel/registry.h"
#include "pgproxy/limits/client_limits.h"
#include "pgproxy/metrics/metrics.h"
#include "pgproxy/pool/shared_pools.h"
#include "pgproxy/upstream/backend_table.h"

namespace pgproxy::process {
namespace {

constexpr char kMagic[16] = "pgproxy-shared";
constexpr std::size_t kRegions = 6;  // cancels, metrics, backends, limits, pools, control
constexpr std::size_t kAlign = 4096;
constexpr const char* kRegionNames[kRegions] = {"cancel registry", "metrics",    "backend table",
                                                "client limits",   "pool table", "admin control"};

// What the tables' layouts depend on beyond their total sizes: two binaries that agree on all of
// these (and on kLayoutVersion) read each other's tables the same way.
constexpr std::array<std::uint64_t, 15> kShape = {
    sizeof(metrics::Slot),  sizeof(metrics::MasterStats), metrics::kMaxSlots,
    metrics::kMaxMappings,  metrics::kMappingCounters,    sizeof(upstream::BackendSlot),
    upstream::kMaxBackends, cancel::Registry::kSlots,     sizeof(limits::WorkerCounts),
    limits::kCountEntries,  limits::kBucketEntries,       limits::kMaxWorkers,
    pool::kMaxPools,        pool::kMaxWorkerSlots,        pool::kMaxLabel};

struct Header {
  char magic[16];
  std::uint32_t version;
  std::uint32_t regions;
  std::uint64_t total;
  std::uint64_t offset[kRegions];
  std::uint64_t size[kRegions];
  std::uint64_t shape[kShape.size()];
};

constexpr std::size_t alignUp(std::size_t n) {
  return (n + kAlign - 1) / kAlign * kAlign;
}

// This binary's header: where each region lies and how big it is.
Header expected() {
  Header h{};
  std::memcpy(h.magic, kMagic, sizeof(kMagic));
  h.version = SharedRegions::kLayoutVersion;
  h.regions = kRegions;
  const std::size_t sizes[kRegions] = {
      cancel::Registry::bytesNeeded(),       metrics::Registry::bytesNeeded(),
      upstream::BackendTable::bytesNeeded(), limits::ClientLimits::bytesNeeded(),
      pool::SharedPools::bytesNeeded(),      admin::Control::bytesNeeded()};
  std::size_t at = alignUp(sizeof(Header));
  for (std::size_t i = 0; i < kRegions; ++i) {
    h.offset[i] = at;
    h.size[i] = sizes[i];
    at = alignUp(at + sizes[i]);
  }
  h.total = at;
  for (std::size_t i = 0; i < kShape.size(); ++i) {
    h.shape[i] = kShape[i];
  }
  return h;
}

// Why `got` cannot be read as this binary's layout, or "" when it can.
std::string mismatch(const Header& got, const Header& want) {
  if (std::memcmp(got.magic, want.magic, sizeof(want.magic)) != 0) {
    return "not pgproxy's shared memory";
  }
  if (got.version != want.version) {
    return "layout version " + std::to_string(got.version) + ", this binary's is " +
           std::to_string(want.version);
  }
  for (std::size_t i = 0; i < kRegions; ++i) {
    if (got.offset[i] != want.offset[i] || got.size[i] != want.size[i]) {
      return std::string("the ") + kRegionNames[i] + " has " + std::to_string(got.size[i]) +
             " bytes, this binary's has " + std::to_string(want.size[i]);
    }
  }
  if (got.regions != want.regions || got.total != want.total ||
      std::memcmp(got.shape, want.shape, sizeof(want.shape)) != 0) {
    return "the tables are shaped differently";
  }
  return "";
}

base::Result<void*> mapFd(int fd, std::size_t size) {
  void* mem = mmap(nullptr, size, PROT_READ | PROT_WRITE, MAP_SHARED, fd, 0);
  if (mem == MAP_FAILED) {
    return base::Error{"mmap of the shared memory failed: " + base::errnoText(errno)};
  }
  return mem;
}

}  // namespace

base::Result<SharedRegions> SharedRegions::create() {
  const Header h = expected();
  base::UniqueFd fd(memfd_create("pgproxy-shared", MFD_CLOEXEC | MFD_ALLOW_SEALING));
  if (!fd.valid()) {
    return base::Error{"memfd_create failed: " + base::errnoText(errno)};
  }
  if (ftruncate(fd.get(), static_cast<off_t>(h.total)) != 0) {
    return base::Error{"cannot size the shared memory: " + base::errnoText(errno)};
  }
  // Sealed at its size: no process can shrink it under another's mapping (SIGBUS).
  if (fcntl(fd.get(), F_ADD_SEALS, F_SEAL_SHRINK | F_SEAL_GROW | F_SEAL_SEAL) != 0) {
    return base::Error{"cannot seal the shared memory: " + base::errnoText(errno)};
  }
  auto mem = mapFd(fd.get(), h.total);
  if (!mem) {
    return mem.error();
  }
  std::memcpy(*mem, &h, sizeof(h));  // the rest is zero, as the tables want it
  return SharedRegions(std::move(fd), *mem, h.total);
}

base::Result<SharedRegions> SharedRegions::adopt(int raw) {
  base::UniqueFd fd(raw);
  const Header want = expected();
  struct stat st;
  if (fstat(fd.get(), &st) != 0) {
    return base::Error{"descriptor " + std::to_string(raw) + ": " + base::errnoText(errno)};
  }
  int seals = fcntl(fd.get(), F_GET_SEALS);
  if (seals < 0 || (seals & F_SEAL_SHRINK) == 0) {
    return base::Error{"descriptor " + std::to_string(raw) + " is not a sealed memfd"};
  }
  if (static_cast<std::uint64_t>(st.st_size) < sizeof(Header)) {
    return base::Error{"the shared memory is too small to be pgproxy's"};
  }
  Header got;
  if (pread(fd.get(), &got, sizeof(got), 0) != static_cast<ssize_t>(sizeof(got))) {
    return base::Error{"cannot read the shared memory's header: " + base::errnoText(errno)};
  }
  if (std::string why = mismatch(got, want); !why.empty()) {
    return base::Error{"its layout differs from this binary's: " + why};
  }
  if (static_cast<std::uint64_t>(st.st_size) != want.total) {
    return base::Error{"its size is " + std::to_string(st.st_size) + " bytes, this binary's " +
                       std::to_string(want.total)};
  }
  fcntl(fd.get(), F_SETFD, FD_CLOEXEC);
  auto mem = mapFd(fd.get(), want.total);
  if (!mem) {
    return mem.error();
  }
  return SharedRegions(std::move(fd), *mem, want.total);
}

SharedRegions::SharedRegions(SharedRegions&& other) noexcept
    : fd_(std::move(other.fd_)),
      base_(std::exchange(other.base_, nullptr)),
      size_(std::exchange(other.size_, 0)) {}

SharedRegions& SharedRegions::operator=(SharedRegions&& other) noexcept {
  if (this != &other) {
    if (base_) {
      munmap(base_, size_);
    }
    fd_ = std::move(other.fd_);
    base_ = std::exchange(other.base_, nullptr);
    size_ = std::exchange(other.size_, 0);
  }
  return *this;
}

SharedRegions::~SharedRegions() {
  if (base_) {
    munmap(base_, size_);
  }
}

void* SharedRegions::region(std::size_t i) const {
  return static_cast<char*>(base_) + expected().offset[i];
}

void* SharedRegions::cancels() const {
  return region(0);
}
void* SharedRegions::metrics() const {
  return region(1);
}
void* SharedRegions::backends() const {
  return region(2);
}
void* SharedRegions::limits() const {
  return region(3);
}
void* SharedRegions::pools() const {
  return region(4);
}

void* SharedRegions::control() const {
  return region(5);
}

}  // namespace pgproxy::process
