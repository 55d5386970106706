#pragma once

#include <cstddef>
#include <functional>
#include <optional>
#include <string>
#include <string_view>

#include "pgproxy/admin/console_command.h"
#include "pgproxy/admin/control_server.h"
#include "pgproxy/admin/live_state.h"

namespace pgproxy::admin {

// What running an admin command needs: the shared state to read (captured per command), the
// switches to set, and a way to signal the master (RELOAD, SHUTDOWN).
struct CommandEnv {
  Sources sources;
  Control* control = nullptr;
  // Sends `sig` to the master; false when it cannot (the master is gone).
  std::function<bool(int sig)> signal_master;
  // Asks every live worker (this one included) over the control sockets; `done` runs from the
  // loop. Destroying the returned gather cancels it. Unset: no worker can be asked.
  std::function<std::unique_ptr<ControlGather>(const ControlRequest&, ControlGather::Done)>
      ask_workers;
  // Calls `done` from the loop once `ready` holds (checked every 20 ms). Unset: cannot wait.
  std::function<std::unique_ptr<Poller>(std::function<bool()> ready, std::function<void()> done)>
      poll_until;
  std::string who;  // for the log line every state change writes: "console user x from 1.2.3.4"
};

// The answer to one command, for either renderer: the console sends rows or CommandComplete (or
// an ErrorResponse), the API a JSON body with an HTTP status derived from the SQLSTATE.
struct Reply {
  const char* sqlstate = nullptr;  // set: the command failed, `message` says why
  std::string message;
  std::string tag;           // CommandComplete tag on success
  std::optional<View> rows;  // SHOW
  // Set: the answer needs every worker's part; ask them (env.ask_workers), then complete().
  std::optional<ControlRequest> ask;
  // Set: the answer waits until this holds (env.poll_until), then complete() with no parts.
  // execute() sets `ask` or `until` only when env has ask_workers or poll_until.
  std::function<bool()> until;
  std::vector<std::string> notices;  // the console's NoticeResponses (workers that did not answer)
  std::vector<Missing> missing;      // the API's "missing" list
  bool ok() const { return sqlstate == nullptr; }
};

// Runs a parsed command: one executor for the console and the REST API, so an action means the
// same wherever it comes from.
Reply execute(const Command& c, CommandEnv& env);
// The answer to a command whose Reply asked the workers, from what they said.
Reply complete(const Command& c, const Gathered& g);

// The console's side of the wire protocol, after login: simple queries in, replies out. No I/O:
// the session feeds it the client's bytes and writes what it appends.
class Console {
 public:
  // A console query is one short command; a longer message is refused and ends the session.
  static constexpr std::size_t kMaxMessage = 64 * 1024;

  // `answered` is called (from the loop) when the workers a command asked have answered or the
  // deadline passed: the owner then calls resume().
  Console(CommandEnv env, std::function<void(Gathered)> answered = {})
      : env_(std::move(env)), answered_(std::move(answered)) {}

  // AuthenticationOk, the parameters psql wants to see, ReadyForQuery.
  static std::string greeting(std::string_view version);

  enum class Status { kOpen, kClose, kWait };
  // Feeds client bytes; appends the replies to `out`. kClose: the client said goodbye, or broke
  // the protocol (then `out` ends with a FATAL ErrorResponse). kWait: a command waits for the
  // workers' answers (the console asked them through env.ask_workers); the caller stops reading
  // until resume() and feeds nothing meanwhile.
  Status feed(std::string_view bytes, std::string& out);
  // The workers answered (resume() is called from the gather's callback): the command's reply,
  // then what the client had sent after it.
  Status resume(const Gathered& g, std::string& out);

 private:
  void handle(char type, std::string_view body, std::string& out);
  void reply(const Reply& r, std::string& out);
  Status drain(std::string_view bytes, std::string& out);
  CommandEnv env_;
  std::function<void(Gathered)> answered_;
  std::optional<Command> waiting_;  // the command whose workers' answers are awaited
  std::unique_ptr<ControlGather> gather_;
  std::unique_ptr<Poller> poller_;
  std::string partial_;        // an incomplete message
  bool skip_to_sync_ = false;  // an extended-protocol message was refused: wait for Sync
  bool closed_ = false;
};

}  // namespace pgproxy::admin
