#pragma once

#include <cstddef>
#include <string>
#include <string_view>

namespace pgproxy::proto {

// Removes SCRAM-SHA-256-PLUS from the backend's AuthenticationSASL mechanism list on sessions
// pgproxy terminates. Channel binding ties SCRAM to the TLS certificate the client sees; on a
// terminated session that is pgproxy's, not the backend's, so a -PLUS exchange can only fail.
// Without the offer, clients with channel_binding=require fail with libpq's own clear message.
// A client that could bind but was not offered -PLUS says so in its first SCRAM message (GS2
// flag 'y'), and a backend that can bind (its leg is TLS) must then refuse it: that is SCRAM's
// downgrade protection, and the flag sits inside the signed exchange, so no proxy may change it.
// checkSaslInitialResponse spots that case so pgproxy can refuse with a message that says why.
//
// It looks only at the authentication phase: once AuthenticationOk or an ErrorResponse has
// passed (or the stream is not what a backend sends), it is inactive and bytes pass untouched.
// Pure: no I/O. Holds at most one message (bounded by kMaxMessage) while it waits for the rest.
enum class ScramClientFirst { kNeedMore, kFine, kBindingDowngrade };
// Looks at the client's first message of the authentication exchange: kBindingDowngrade for a
// SASLInitialResponse choosing SCRAM-SHA-256 with GS2 flag 'y'. Anything else (a password
// message, other mechanisms, malformed bytes) is kFine: the backend judges it.
ScramClientFirst checkSaslInitialResponse(std::string_view bytes);

class SaslMechanismFilter {
 public:
  static constexpr std::size_t kMaxMessage = 64 * 1024;
  static constexpr std::string_view kPlusMechanism = "SCRAM-SHA-256-PLUS";

  bool active() const { return active_; }
  // Appends to `out` what should go to the client for `in`. While active, a partial message is
  // kept until it is complete.
  void feed(std::string_view in, std::string& out);
  // True once a mechanism list was rewritten (for logging and tests).
  bool removedPlus() const { return removed_; }

 private:
  void finish(std::string& out);  // becomes inactive, releasing what it holds

  std::string pending_;
  bool active_ = true;
  bool removed_ = false;
};

}  // namespace pgproxy::proto
