#pragma once

#include <cstddef>
#include <cstdint>
#include <string>

#include "pgproxy/base/result.h"
#include "pgproxy/base/unique_fd.h"

namespace pgproxy::process {

// The master's shared memory: the cancel registry, the metrics, the backend table, the
// per-client limits, the pool table and the operators' switches (admin/control.h), in one sealed
// memfd behind a header that describes the layout. Children inherit the mapping at fork; on a
// binary upgrade the descriptor crosses exec like the listening sockets, so the new master sees the
// old master's sessions (max_connections, per-client counts, rate buckets, least_conn, pool caps,
// cancels) and its counters go on. A binary whose layout differs does not adopt the regions:
// adopt() says why and the master starts fresh ones.
class SharedRegions {
 public:
  // Bump when the meaning of any shared table changes without changing its size.
  static constexpr std::uint32_t kLayoutVersion = 6;

  // New, zeroed regions.
  static base::Result<SharedRegions> create();
  // Maps the regions behind `fd` (taking ownership of it) when their header matches this
  // binary's layout exactly; otherwise an error naming the difference (and `fd` is closed).
  static base::Result<SharedRegions> adopt(int fd);

  SharedRegions(SharedRegions&& other) noexcept;
  SharedRegions& operator=(SharedRegions&& other) noexcept;
  SharedRegions(const SharedRegions&) = delete;
  ~SharedRegions();

  int fd() const { return fd_.get(); }
  void* cancels() const;
  void* metrics() const;
  void* backends() const;
  void* limits() const;
  void* pools() const;
  void* control() const;

 private:
  SharedRegions(base::UniqueFd fd, void* base, std::size_t size) noexcept
      : fd_(std::move(fd)), base_(base), size_(size) {}
  void* region(std::size_t i) const;
  base::UniqueFd fd_;
  void* base_ = nullptr;
  std::size_t size_ = 0;
};

}  // namespace pgproxy::process
