// The workers' control channel: the frame codec with malformed input, and the socket server and
// gather over real abstract Unix sockets on one event loop (a worker that never answers is named
// missing at the deadline, and the console turns the parts into one table).
#include "pgproxy/admin/control_channel.h"

#include <event2/event.h>
#include <gtest/gtest.h>
#include <sys/socket.h>
#include <sys/un.h>
#include <unistd.h>

#include <cstring>
#include <memory>
#include <random>
#include <string>
#include <vector>

#include "pgproxy/admin/console.h"
#include "pgproxy/admin/control_server.h"
#include "pgproxy/proto/wire.h"

namespace pgproxy::admin {
namespace {

TEST(ControlFrames, RoundTrip) {
  ControlRequest req{ControlKind::kKillClient, 12'345'678'901ull, "a.example.com", 77};
  ControlRequest back;
  ASSERT_EQ(decodeRequest(encodeRequest(req), back), Decoded::kDone);
  EXPECT_EQ(back, req);
  ControlReply reply;
  reply.rows = {{std::string("1"), std::nullopt, std::string("")}, {}, {std::string("x\0y", 3)}};
  ControlReply got;
  ASSERT_EQ(decodeReply(encodeReply(reply), got), Decoded::kDone);
  EXPECT_EQ(got, reply);
  ControlReply refused;
  refused.error = "no";
  ASSERT_EQ(decodeReply(encodeReply(refused), got), Decoded::kDone);
  EXPECT_EQ(got.error, "no");
}

TEST(ControlFrames, EveryPrefixNeedsMoreAndGarbageIsRefused) {
  ControlReply reply;
  reply.rows = {{std::string("abc"), std::nullopt}};
  std::string frame = encodeReply(reply);
  ControlReply got;
  for (std::size_t i = 0; i < frame.size(); ++i) {
    EXPECT_EQ(decodeReply(frame.substr(0, i), got), Decoded::kNeedMore) << i;
  }
  EXPECT_EQ(decodeReply(frame + "x", got), Decoded::kBad);  // one frame per connection
  std::string wrong_version = frame;
  wrong_version[4] = 9;
  EXPECT_EQ(decodeReply(wrong_version, got), Decoded::kBad);
  std::string huge("\xff\xff\xff\xff\x01\x00", 6);  // announces 4 GiB: refused at once
  EXPECT_EQ(decodeReply(huge, got), Decoded::kBad);
  std::string lying_rows = frame;
  lying_rows[6 + 3] = 100;  // 100 rows in a body that holds one
  EXPECT_EQ(decodeReply(lying_rows, got), Decoded::kBad);
  std::string cell_past_end = frame;
  cell_past_end[6 + 4 + 1 + 3] = 120;  // the first cell's length runs past the frame
  EXPECT_EQ(decodeReply(cell_past_end, got), Decoded::kBad);
  ControlRequest req;
  EXPECT_EQ(decodeRequest(std::string("\x00\x00\x00\x12\x01\x09", 6) + std::string(12, '\0'), req),
            Decoded::kBad);  // unknown kind
  EXPECT_EQ(decodeRequest(std::string("\x00\x00\x00\x12\x01\x01", 6) + std::string(12, '\0'), req),
            Decoded::kDone);  // the same frame with a known kind
  EXPECT_EQ(decodeRequest(std::string("\x00\x00\x00\x0e\x01\x01", 6) + std::string(8, '\0'), req),
            Decoded::kBad);  // a number but no limit
  // Random bytes never crash and never claim a frame they do not hold.
  std::mt19937 rng(7);
  for (int i = 0; i < 2000; ++i) {
    std::string bytes(rng() % 64, '\0');
    for (char& b : bytes) {
      b = static_cast<char>(rng());
    }
    (void)decodeReply(bytes, got);
    (void)decodeRequest(bytes, req);
  }
}

// A test instance id no running pgproxy uses.
std::uint64_t testInstance() {
  return 0x7e57000000000000ull | static_cast<std::uint64_t>(getpid());
}

class ControlSocketTest : public ::testing::Test {
 protected:
  void SetUp() override { base_ = event_base_new(); }
  void TearDown() override { event_base_free(base_); }
  // Runs the loop until `done` or 5 s.
  void runUntil(const bool& done) {
    for (int i = 0; i < 500 && !done; ++i) {
      event_base_loop(base_, EVLOOP_ONCE | EVLOOP_NONBLOCK);
      usleep(10'000);
    }
  }
  event_base* base_;
};

TEST_F(ControlSocketTest, TheGatherHasEveryAnswerAndNamesTheSilentWorker) {
  std::vector<ControlRequest> seen;
  auto answer = [&seen](std::size_t slot) {
    return [&seen, slot](const ControlRequest& r) {
      seen.push_back(r);
      ControlReply reply;
      reply.rows = {{std::to_string(slot), std::string(r.name)}};
      return reply;
    };
  };
  ControlServer a(base_, testInstance(), 3, answer(3));
  ControlServer b(base_, testInstance(), 5, answer(5));
  ASSERT_TRUE(a.ok());
  ASSERT_TRUE(b.ok());
  // Slot 7 listens but never answers: a stopped worker.
  int silent = socket(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0);
  sockaddr_un sa{};
  sa.sun_family = AF_UNIX;
  std::string name = controlSocketName(testInstance(), 7);
  std::memcpy(sa.sun_path + 1, name.data(), name.size());
  ASSERT_EQ(bind(silent, reinterpret_cast<sockaddr*>(&sa),
                 static_cast<socklen_t>(offsetof(sockaddr_un, sun_path) + 1 + name.size())),
            0);
  ASSERT_EQ(listen(silent, 4), 0);

  bool done = false;
  Gathered result;
  ControlGather gather(base_, testInstance(), {{3, 103}, {5, 105}, {7, 107}, {9, 109}},
                       ControlRequest{ControlKind::kKillMapping, 0, "m", 0}, 200, [&](Gathered g) {
                         result = std::move(g);
                         done = true;
                       });
  EXPECT_FALSE(done);  // never from inside the constructor
  runUntil(done);
  ASSERT_TRUE(done);
  ASSERT_EQ(result.parts.size(), 2u);
  ASSERT_EQ(result.missing.size(), 2u);
  EXPECT_EQ(result.missing[0].slot, 7u);  // listening, silent: the deadline
  EXPECT_NE(result.missing[0].why.find("deadline"), std::string::npos);
  EXPECT_EQ(result.missing[1].slot, 9u);  // no socket at all
  EXPECT_EQ(result.missing[1].pid, 109);
  EXPECT_EQ(seen.size(), 2u);
  EXPECT_EQ(seen[0].name, "m");
  close(silent);
}

TEST_F(ControlSocketTest, TheConsoleWaitsForTheWorkersThenAnswersInOrder) {
  ControlServer worker(base_, testInstance(), 1, [](const ControlRequest&) {
    ControlReply reply;
    std::vector<Cell> row(clientColumns().size());
    row[0] = std::string("10000000002");
    ControlReply r;
    r.rows = {row, row};
    r.rows[1][0] = std::string("10000000001");
    return r;
  });
  ASSERT_TRUE(worker.ok());
  CommandEnv env;
  env.ask_workers = [this](const ControlRequest& r, ControlGather::Done done) {
    return std::make_unique<ControlGather>(base_, testInstance(),
                                           std::vector<ControlGather::Target>{{1, 1}, {2, 2}}, r,
                                           200, std::move(done));
  };
  bool answered = false;
  Gathered got;
  Console console(std::move(env), [&](Gathered g) {
    got = std::move(g);
    answered = true;
  });
  std::string out;
  std::string wire = proto::buildMessage('Q', std::string("SHOW CLIENTS\0", 13)) +
                     proto::buildMessage('Q', std::string("SHOW VERSION\0", 13));
  ASSERT_EQ(console.feed(wire, out), Console::Status::kWait);
  EXPECT_TRUE(out.empty());  // nothing, not even the next query's answer, before the workers'
  runUntil(answered);
  ASSERT_TRUE(answered);
  ASSERT_EQ(console.resume(got, out), Console::Status::kOpen);
  // A notice for the missing worker, the rows sorted by id, then the next query's answer.
  std::string types;
  std::vector<std::string> bodies;
  for (std::string_view w = out; w.size() >= 5;) {
    std::uint32_t len = proto::readU32(w.data() + 1);
    types += w[0];
    bodies.emplace_back(w.substr(5, len - 4));
    w.remove_prefix(1 + len);
  }
  EXPECT_EQ(types, "NTDDCZTDCZ");
  EXPECT_NE(bodies[0].find("slot 2"), std::string::npos);
  EXPECT_NE(bodies[2].find("10000000001"), std::string::npos);
  EXPECT_NE(bodies[3].find("10000000002"), std::string::npos);
}

}  // namespace
}  // namespace pgproxy::admin
