#pragma once

#include <cstddef>
#include <deque>
#include <map>
#include <set>
#include <string>
#include <string_view>
#include <vector>

#include "pgproxy/pool/pool.h"

namespace pgproxy::pool {

// LISTEN through a transaction pool: one server connection of the pool, borrowed for as long as
// any client listens, runs LISTEN for the union of its clients' channels, and each notification
// it receives goes to every client listening on that channel, in the order the server sent them.
// Clients never run LISTEN on the servers they borrow for their transactions (pgproxy answers
// it), so a notification reaches its listeners once each, whichever server they are on.
//
// One hub per pool and worker: a worker's listening clients of a pool cost one server
// connection, taken from the pool's size like any other.
class NotifyHub final : public PoolClient {
 public:
  class Subscriber {
   public:
    // A NotificationResponse for a channel it listens on (the whole message).
    virtual void notify(std::string_view message) = 0;
    // A LISTEN asked with subscribe() that returned false is in force on the server; once for
    // each such subscribe().
    virtual void listening() = 0;
    // The hub cannot listen for it (no connection could be opened, or the one that listened was
    // lost): `fatal` is the ErrorResponse its client ends with, as a client of a direct
    // connection would learn that its notifications stopped. Possibly before subscribe()
    // returns; it has left the hub when this is called.
    virtual void unheard(std::string fatal) = 0;

   protected:
    ~Subscriber() = default;
  };

  // Channel names as PostgreSQL keeps them: cut to 63 bytes.
  static std::string channelName(std::string_view name);
  // Bytes of notifications one client may have waiting while it is in a transaction.
  static constexpr std::size_t kMaxQueued = std::size_t{1} << 20;

  explicit NotifyHub(Pool& pool) : pool_(pool) {}
  ~NotifyHub();
  NotifyHub(const NotifyHub&) = delete;
  NotifyHub& operator=(const NotifyHub&) = delete;

  // True when the server already listens on `channel`; else listening() follows once it does.
  bool subscribe(Subscriber* s, const std::string& channel);
  void unsubscribe(Subscriber* s, const std::string& channel);
  void unsubscribeAll(Subscriber* s);

  // PoolClient.
  void granted(ServerConn* server) override;
  void refused(std::string error) override;
  void linked(std::string error) override;
  bool fromServer(std::string_view bytes, bool more) override;
  void serverParam(std::string_view, std::string_view) override {}
  Release ready(char status) override;
  void serverLost(const std::string& why) override;
  void serverDrained() override {}
  bool welcomed() override { return false; }

 private:
  void send(const std::string& sql, std::vector<Subscriber*> waiters);
  void listenAll();  // the channels not yet listened on, and the subscribers waiting for them
  void confirm(std::vector<Subscriber*>& waiters);
  void message(char type, std::string_view body);
  // Every subscriber is told unheard(fatal) and leaves; the hub starts afresh.
  void failAll(const std::string& fatal);

  void start();                // a server connection of its own (beyond the pool's size)
  void drop(const char* why);  // closes the server (it listens on the hub's channels)

  Pool& pool_;
  bool starting_ = false;  // its server connection is on its way
  ServerConn* server_ = nullptr;
  bool linking_ = false;
  std::map<std::string, std::set<Subscriber*>> channels_;
  std::set<std::string> listened_;  // sent to the server
  // Subscribers waiting for a LISTEN not yet sent (no server yet), and per query in flight.
  std::vector<Subscriber*> unsent_;
  std::deque<std::vector<Subscriber*>> in_flight_;
  std::vector<Subscriber*> confirming_;  // being told listening()
  // The server's stream, framed.
  std::string buffer_;
};

}  // namespace pgproxy::pool
