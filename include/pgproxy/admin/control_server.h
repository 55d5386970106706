#pragma once

#include <sys/types.h>

#include <cstddef>
#include <cstdint>
#include <functional>
#include <memory>
#include <string>
#include <vector>

#include "pgproxy/admin/control_channel.h"

struct event_base;
struct event;

namespace pgproxy::admin {

// A worker's control socket: answers one request per connection with what `respond` returns.
// Only processes of pgproxy's own user (or root) are answered (SO_PEERCRED); a connection that
// does not send a whole request within 2 s is closed. Lives on the worker's event loop.
class ControlServer {
 public:
  using Responder = std::function<ControlReply(const ControlRequest&)>;
  ControlServer(event_base* base, std::uint64_t instance, std::size_t slot, Responder respond);
  ~ControlServer();
  ControlServer(const ControlServer&) = delete;
  ControlServer& operator=(const ControlServer&) = delete;
  bool ok() const { return fd_ >= 0; }

  struct Conn;

 private:
  static void onAccept(int fd, short what, void* arg);
  event_base* base_;
  int fd_ = -1;
  event* accept_ = nullptr;
  Responder respond_;
  Conn* conns_ = nullptr;  // open connections, freed with the server
  friend struct Conn;
};

// One request to a set of workers at once, with a deadline: the answer is every part that came
// in time, and the workers that did not answer (stopped, stuck, gone) are named as missing, so a
// stuck worker can never hold a console or API request.
struct Missing {
  std::size_t slot;
  pid_t pid;
  std::string why;
};
struct Gathered {
  std::vector<ControlReply> parts;
  std::vector<Missing> missing;
};

class ControlGather {
 public:
  using Done = std::function<void(Gathered)>;
  struct Target {
    std::size_t slot;
    pid_t pid;
  };
  // Starts at once; `done` runs from the event loop (never inside start), unless the gather is
  // destroyed first.
  ControlGather(event_base* base, std::uint64_t instance, const std::vector<Target>& targets,
                const ControlRequest& request, std::uint64_t deadline_ms, Done done);
  ~ControlGather();
  ControlGather(const ControlGather&) = delete;
  ControlGather& operator=(const ControlGather&) = delete;

  struct Leg;

 private:
  static void onDeadline(int fd, short what, void* arg);
  void legDone(Leg* leg);
  void finish();
  std::vector<std::unique_ptr<Leg>> legs_;
  std::size_t pending_ = 0;
  event* timer_ = nullptr;
  Done done_;
  Gathered result_;
  friend struct Leg;
};

// Checks `ready` every 20 ms on the loop and calls `done` once it holds (PAUSE waits so for the
// mapping's transactions to end). Destroying it cancels.
class Poller {
 public:
  Poller(event_base* base, std::function<bool()> ready, std::function<void()> done);
  ~Poller();
  Poller(const Poller&) = delete;
  Poller& operator=(const Poller&) = delete;

 private:
  static void onTick(int fd, short what, void* arg);
  event* timer_ = nullptr;
  std::function<bool()> ready_;
  std::function<void()> done_;
};

}  // namespace pgproxy::admin
