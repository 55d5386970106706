// Several instances as one (issue 19): two pgproxy instances behind one name (round-robin DNS,
// an L4 balancer) list each other as peers. A client's cancel request may reach either one; it
// must reach the session wherever it is. Keys pgproxy issues (pooled sessions, and spliced
// plaintext or terminated ones, whose BackendKeyData it rewrites) carry the instance's id and go
// straight to it; a key no session here holds goes to every peer, one hop only.
#include <gtest/gtest.h>
#include <unistd.h>

#include <chrono>
#include <string>

#include "harness.h"
#include "pgproxy/proto/wire.h"

namespace pgproxy::it {
namespace {

using std::chrono::seconds;

struct Key {
  std::uint32_t pid = 0, secret = 0;
};

// The BackendKeyData in a login's replies.
Key keyIn(const std::string& replies) {
  std::size_t at = replies.find(std::string("K\0\0\0\x0c", 5));
  Key k;
  if (at != std::string::npos && at + 13 <= replies.size()) {
    k.pid = proto::readU32(replies.data() + at + 5);
    k.secret = proto::readU32(replies.data() + at + 9);
  }
  return k;
}

std::string instanceConfig(int id, int peer_id, int peer_port, int admin, const char* mapping) {
  return "instance_id: " + std::to_string(id) + "\npeers:\n  - {id: " + std::to_string(peer_id) +
         ", address: \"127.0.0.1:" + std::to_string(peer_port) +
         "\"}\nadmin: {listen: \"127.0.0.1:" + std::to_string(admin) +
         "\"}\nauth: {type: trust}\ndefault: host1.example.com\nmappings:\n"
         "  - {external: host1.example.com, internal: 127.0.0.1, port: {P1}" +
         mapping + "}\n";
}

long long cancels(int admin, const char* result) {
  return scrapeMetric(admin,
                      std::string("pgproxy_cancel_requests_total{result=\"") + result + "\"}");
}

// A session through `through` from 127.0.0.5 runs pg_sleep; a CancelRequest with its key sent to
// `other` from the same address must end it with 57014.
void cancelThroughTheOther(const Proxy& through, const Proxy& other, unsigned want_instance) {
  int fd = connectTcp(through.port(), "127.0.0.5");
  ASSERT_GE(fd, 0);
  std::string bytes = startupPacket({{"user", "postgres"}, {"database", "postgres"}});
  ASSERT_EQ(write(fd, bytes.data(), bytes.size()), static_cast<ssize_t>(bytes.size()));
  std::string replies;
  ASSERT_TRUE(readUntilReady(fd, &replies, seconds(10))) << replies << through.log();
  Key key = keyIn(replies);
  ASSERT_NE(key.pid, 0u) << "no BackendKeyData";
  EXPECT_EQ(key.pid >> 24, want_instance) << key.pid;
  std::string query = proto::buildMessage('Q', std::string("select pg_sleep(30)\0", 20));
  ASSERT_EQ(write(fd, query.data(), query.size()), static_cast<ssize_t>(query.size()));
  ASSERT_TRUE(eventually([] {
    return queryHost1(
               "select count(*) from pg_stat_activity where state = 'active' and "
               "query = 'select pg_sleep(30)'") == "1";
  }));
  std::string cancel;
  proto::appendU32(cancel, 16);
  proto::appendU32(cancel, 80877102);
  proto::appendU32(cancel, key.pid);
  proto::appendU32(cancel, key.secret);
  int c = connectTcp(other.port(), "127.0.0.5");
  ASSERT_EQ(write(c, cancel.data(), cancel.size()), 16);
  std::string answer;  // the query's end: its error, then ReadyForQuery
  EXPECT_TRUE(readUntilReady(fd, &answer, seconds(20)));
  close(c);
  close(fd);
  EXPECT_EQ(sqlstateOf(answer), "57014") << answer << through.log() << other.log();
}

TEST(Instances, APooledSessionsCancelReachesItsInstanceFromTheOther) {
  int pa = freePort(), pb = freePort(), admin_a = freePort(), admin_b = freePort();
  const char* pooled = ", authenticate: true, pool: {mode: transaction, size: 2}";
  Proxy a(instanceConfig(1, 2, pb, admin_a, pooled), 2, "", pa);
  Proxy b(instanceConfig(2, 1, pa, admin_b, pooled), 2, "", pb);
  // pgproxy's key for the session on A names A (instance 1): B sends the cancel straight there.
  cancelThroughTheOther(a, b, 1);
  EXPECT_EQ(cancels(admin_b, "forwarded"), 1);
  EXPECT_EQ(cancels(admin_a, "forwarded"), 1);
  // And the other way round.
  cancelThroughTheOther(b, a, 2);
}

TEST(Instances, ASplicedSessionGetsAKeyNamingItsInstanceAndUnknownKeysGoOneHop) {
  int pa = freePort(), pb = freePort(), admin_a = freePort(), admin_b = freePort();
  Proxy a(instanceConfig(1, 2, pb, admin_a, ""), 2, "", pa);
  Proxy b(instanceConfig(2, 1, pa, admin_b, ""), 2, "", pb);
  // A plaintext session spliced through A (not pooled): its BackendKeyData is rewritten to
  // pgproxy's key, which names A, and B sends the cancel straight there.
  cancelThroughTheOther(a, b, 1);
  // A key nobody holds: B asks A, and A, seeing the request came from a peer, asks no one.
  std::string cancel;
  proto::appendU32(cancel, 16);
  proto::appendU32(cancel, 80877102);
  proto::appendU32(cancel, 4242);
  proto::appendU32(cancel, 99);
  int c = connectTcp(pb, "127.0.0.5");
  ASSERT_EQ(write(c, cancel.data(), cancel.size()), 16);
  bool closed = false;
  readUntilClose(c, std::chrono::milliseconds(10000), &closed);
  close(c);
  EXPECT_TRUE(eventually([&] { return cancels(admin_a, "unmatched") == 1; }))
      << httpGet(admin_a, "/metrics").body;
  EXPECT_EQ(cancels(admin_b, "forwarded"), 2);  // the first one, and this one to A
  EXPECT_EQ(cancels(admin_a, "forwarded"), 1);  // the first one only: nothing came back to B
}

}  // namespace
}  // namespace pgproxy::it
