#pragma once

#include <functional>
#include <optional>
#include <string>
#include <string_view>

#include "pgproxy/admin/console.h"
#include "pgproxy/base/result.h"

namespace pgproxy::admin {

// The REST API under /api/v1 on admin.listen: the console's views as JSON and its commands as
// POSTs, through the same executor (console.h), so the two never disagree. No I/O of its own:
// the HTTP server (admin_server.cc) hands it a request and sends what it returns.

struct ApiRequest {
  enum class Method { kGet, kHead, kPost, kPut, kOther } method = Method::kGet;
  std::string path;   // decoded, below /api/v1 ("/backends/127.0.0.1:5432/drain")
  std::string query;  // the raw query string ("wait=true")
  std::string body;
  bool authorized = false;  // carried the configured bearer token
  bool token_configured = false;
};

struct ApiResponse {
  int status = 200;
  std::string body;   // JSON
  std::string allow;  // for 405: the methods the path takes
  // Set: the answer needs the workers. The server asks them (commands.ask_workers with `ask`)
  // and answers with completeApi() once they have.
  std::optional<ControlRequest> ask;
  std::function<bool()> until;  // or: answer once this holds (PAUSE)
  std::optional<Command> command;
  std::string topic;
  std::uint32_t page = 0;  // GET clients: rows per page
};

struct ApiEnv {
  CommandEnv commands;
  bool allow_config_write = false;
  std::string config_path;
  // Checks a configuration as `pgproxy -t` does (process::loadForServing).
  std::function<base::Status(const std::string& text)> validate;
  // Replaces the configuration file with `text` atomically.
  std::function<base::Status(const std::string& text)> write_config;
};

ApiResponse handleApi(const ApiRequest& req, ApiEnv& env);
ApiResponse completeApi(const ApiResponse& pending, const Gathered& g);

// The OpenAPI 3 description of every endpoint, its row schemas made from the views' columns, so
// that the document cannot drift from the responses.
std::string openApiDocument(std::string_view version);

// "name:12:3: message" lines of a configuration error as JSON objects
// ({"line":12,"column":3,"message":"..."}); lines without a position get line and column 0.
std::string configErrorsJson(const std::string& error, const std::string& name);

}  // namespace pgproxy::admin
