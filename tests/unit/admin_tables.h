#pragma once

// The shared tables as the master makes them (its memfd regions), with a configuration
// registered as the master registers it: what the admin views, the console and the REST API
// read and change in their unit tests.

#include <gtest/gtest.h>

#include <optional>
#include <string>
#include <vector>

#include "pgproxy/admin/control.h"
#include "pgproxy/admin/live_state.h"
#include "pgproxy/config/config.h"
#include "pgproxy/metrics/metrics.h"
#include "pgproxy/pool/shared_pools.h"
#include "pgproxy/process/shared_regions.h"
#include "pgproxy/upstream/backend_table.h"

namespace pgproxy::admin {

struct AdminTables {
  // Loads `yaml` (named `name` in errors) into fresh regions; fails the test when it cannot.
  void load(const std::string& yaml, const std::string& name = "test.yaml") {
    auto loaded = config::loadString(yaml, name);
    ASSERT_TRUE(loaded.ok()) << loaded.error().message;
    cfg = std::move(*loaded);
    auto made = process::SharedRegions::create();
    ASSERT_TRUE(made.ok()) << made.error().message;
    regions.emplace(std::move(*made));
    metrics.emplace(static_cast<metrics::Shared*>(regions->metrics()));
    backends.emplace(static_cast<upstream::BackendShared*>(regions->backends()));
    pools.emplace(static_cast<pool::PoolsShared*>(regions->pools()));
    control.emplace(static_cast<ControlShared*>(regions->control()));
    for (const auto& m : cfg.mappings) {
      metrics->registerMapping(m.external);
      for (const auto& b : m.backends) {
        backends->registerBackend(b.key());
      }
    }
    slots = upstream::backendSlots(cfg, *backends);
  }
  Sources sources() {
    Sources s;
    s.config = &cfg;
    s.metrics = &*metrics;
    s.backends = &*backends;
    s.backend_slots = &slots;
    s.pools = &*pools;
    s.control = &*control;
    s.version = "9.9";
    return s;
  }

  config::Config cfg;
  std::optional<process::SharedRegions> regions;
  std::optional<metrics::Registry> metrics;
  std::optional<upstream::BackendTable> backends;
  std::optional<pool::SharedPools> pools;
  std::optional<Control> control;
  std::vector<std::vector<std::size_t>> slots;
};

}  // namespace pgproxy::admin
