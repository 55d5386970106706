#include "pgproxy/admin/rest_api.h"

#include <cerrno>
#include <cstdlib>
#include <vector>

#include "pgproxy/audit/audit.h"
#include "pgproxy/base/text.h"
#include "pgproxy/log/log.h"

namespace pgproxy::admin {
namespace {

using Method = ApiRequest::Method;

ApiResponse json(int status, std::string body) {
  ApiResponse r;
  r.status = status;
  r.body = std::move(body);
  return r;
}

ApiResponse error(int status, const std::string& message, const char* sqlstate = nullptr) {
  std::string body = "{\"error\":" + jsonString(message);
  if (sqlstate) {
    body += ",\"sqlstate\":" + jsonString(sqlstate);
  }
  return json(status, body + "}");
}

ApiResponse notAllowed(const char* allow) {
  ApiResponse r = error(405, std::string("use ") + allow);
  r.allow = allow;
  return r;
}

// The topic named by `name` ("backends"), as the console's SHOW takes it.
std::optional<Topic> topicNamed(std::string_view name) {
  for (const TopicSpec& t : topics()) {
    if (base::toLowerAscii(t.keyword) == name) {
      return t.topic;
    }
  }
  return std::nullopt;
}

constexpr std::uint64_t kDefaultPage = 1000, kMaxPage = 10000;

// after=ID&limit=N in any order; other parameters are ignored.
bool pageOf(const std::string& query, std::uint64_t& after, std::uint64_t& limit) {
  std::size_t at = 0;
  while (at < query.size()) {
    std::size_t amp = query.find('&', at);
    std::string part = query.substr(at, amp == std::string::npos ? std::string::npos : amp - at);
    at = amp == std::string::npos ? query.size() : amp + 1;
    std::size_t eq = part.find('=');
    std::string key = part.substr(0, eq),
                value = eq == std::string::npos ? "" : part.substr(eq + 1);
    if (key != "after" && key != "limit") {
      continue;
    }
    char* end = nullptr;
    errno = 0;
    unsigned long long v = std::strtoull(value.c_str(), &end, 10);
    if (value.empty() || *end != '\0' || errno != 0 || value[0] == '-') {
      return false;
    }
    (key == "after" ? after : limit) = v;
  }
  return limit >= 1 && limit <= kMaxPage;
}

std::vector<std::string> segments(std::string_view path) {
  std::vector<std::string> out;
  while (!path.empty()) {
    if (path.front() == '/') {
      path.remove_prefix(1);
      continue;
    }
    std::size_t slash = path.find('/');
    out.emplace_back(path.substr(0, slash));
    path.remove_prefix(slash == std::string_view::npos ? path.size() : slash);
  }
  return out;
}

// The console's refusals as HTTP statuses.
int statusOf(const char* sqlstate) {
  std::string_view s = sqlstate;
  if (s == "42704") {
    return 404;
  }
  if (s == "0A000") {
    return 501;
  }
  if (s == "42601") {
    return 400;
  }
  if (s == "58000") {
    return 503;
  }
  return 500;
}

// What the console would add as NoticeResponses and the workers that did not answer.
std::string extras(const Reply& r, bool notices) {
  std::string out;
  if (notices && !r.notices.empty()) {
    out += ",\"notices\":[";
    for (std::size_t i = 0; i < r.notices.size(); ++i) {
      out += (i ? "," : "") + jsonString(r.notices[i]);
    }
    out += "]";
  }
  if (!r.missing.empty()) {
    out += ",\"missing\":[";
    for (std::size_t i = 0; i < r.missing.size(); ++i) {
      const Missing& m = r.missing[i];
      out += std::string(i ? "," : "") + "{\"slot\":" + std::to_string(m.slot) +
             ",\"pid\":" + std::to_string(m.pid) + ",\"why\":" + jsonString(m.why) + "}";
    }
    out += "]";
  }
  return out;
}

ApiResponse render(const Reply& r, const std::string& topic_name) {
  if (!r.ok()) {
    return error(statusOf(r.sqlstate), r.message, r.sqlstate);
  }
  if (r.rows) {
    return json(200,
                "{" + jsonString(topic_name) + ":" + renderJson(*r.rows) + extras(r, false) + "}");
  }
  return json(200, "{\"result\":" + jsonString(r.tag) + extras(r, true) + "}");
}

ApiResponse run(const Command& c, ApiEnv& env, const std::string& topic_name = "") {
  Reply r = execute(c, env.commands);
  if (r.ask || r.until) {
    ApiResponse pending;
    pending.ask = r.ask;
    pending.until = r.until;
    pending.command = c;
    pending.topic = topic_name;
    return pending;
  }
  return render(r, topic_name);
}

// POST /mappings/NAME/ACTION, /backends/HOST:PORT/ACTION, /clients/ID/kill, /reload, /shutdown.
std::optional<Command> action(const std::vector<std::string>& seg, const std::string& query) {
  Command c;
  if (seg.size() == 1 && seg[0] == "reload") {
    c.verb = Verb::kReload;
    return c;
  }
  if (seg.size() == 1 && seg[0] == "shutdown") {
    c.verb = Verb::kShutdown;
    c.wait = query == "wait=true" || query == "wait=1";
    return c;
  }
  if (seg.size() != 3) {
    return std::nullopt;
  }
  c.target = seg[1];
  const std::string& act = seg[2];
  if (seg[0] == "mappings") {
    static constexpr std::pair<std::string_view, Verb> kActions[] = {
        {"disable", Verb::kDisable}, {"enable", Verb::kEnable}, {"pause", Verb::kPause},
        {"resume", Verb::kResume},   {"kill", Verb::kKill},     {"reconnect", Verb::kReconnect}};
    for (auto [name, verb] : kActions) {
      if (act == name) {
        c.verb = verb;
        return c;
      }
    }
  } else if (seg[0] == "backends" && (act == "drain" || act == "undrain")) {
    c.verb = act == "drain" ? Verb::kDrainBackend : Verb::kUndrainBackend;
    return c;
  } else if (seg[0] == "clients" && act == "kill") {
    char* end = nullptr;
    c.client = std::strtoull(seg[1].c_str(), &end, 10);
    if (seg[1].empty() || *end != '\0') {
      return std::nullopt;
    }
    c.verb = Verb::kKillClient;
    c.target.clear();
    return c;
  }
  return std::nullopt;
}

ApiResponse putConfig(const ApiRequest& req, ApiEnv& env) {
  if (!env.allow_config_write) {
    return error(403,
                 "replacing the configuration over HTTP is off: set "
                 "admin.allow_config_write: true to allow it");
  }
  if (req.body.empty()) {
    return error(400, "the body must be the whole YAML configuration");
  }
  if (!env.validate || !env.write_config) {
    return error(500, "this process cannot write the configuration");
  }
  if (auto st = env.validate(req.body); !st) {
    return json(422,
                "{\"error\":\"the configuration is invalid; nothing was written\","
                "\"errors\":" +
                    configErrorsJson(st.error().message, env.config_path) + "}");
  }
  if (auto st = env.write_config(req.body); !st) {
    return error(500, "cannot write " + env.config_path + ": " + st.error().message);
  }
  LOG_INFO("admin: the configuration %s was replaced by %s; reloading", env.config_path.c_str(),
           env.commands.who.c_str());
  audit::Event replaced("admin");
  replaced.text("by", env.commands.who)
      .text("command", "PUT /config")
      .text("file", env.config_path)
      .text("result", "ok");
  audit::emit(replaced);
  Command reload;
  reload.verb = Verb::kReload;
  Reply r = execute(reload, env.commands);
  if (!r.ok()) {
    return error(statusOf(r.sqlstate), "written, but " + r.message, r.sqlstate);
  }
  return json(200, "{\"result\":\"written; reloading\"}");
}

const char* jsonType(ColumnType t) {
  switch (t) {
    case ColumnType::kInt8:
      return "integer";
    case ColumnType::kBool:
      return "boolean";
    case ColumnType::kText:
    case ColumnType::kTimestamp:
      break;
  }
  return "string";
}

std::string schemaName(std::string_view keyword) {
  std::string s = base::toLowerAscii(keyword);
  s[0] = static_cast<char>(s[0] - 'a' + 'A');
  return s + "Row";
}

}  // namespace

ApiResponse handleApi(const ApiRequest& req, ApiEnv& env) {
  std::vector<std::string> seg = segments(req.path);
  if (seg.size() == 1 && seg[0] == "openapi.json") {
    if (req.method != Method::kGet && req.method != Method::kHead) {
      return notAllowed("GET, HEAD");
    }
    return json(200, openApiDocument(env.commands.sources.version));
  }
  if (seg.size() == 1 && seg[0] == "config" && req.method == Method::kPut) {
    if (!req.token_configured) {
      return error(403, "changing state over HTTP needs admin.token or admin.token_file");
    }
    return putConfig(req, env);
  }
  if (seg.size() == 1) {
    if (auto topic = topicNamed(seg[0])) {
      if (req.method != Method::kGet && req.method != Method::kHead) {
        return notAllowed(seg[0] == "config" ? "GET, HEAD, PUT" : "GET, HEAD");
      }
      Command c;
      c.verb = Verb::kShow;
      c.topic = *topic;
      ApiResponse out = run(c, env, seg[0]);
      if (out.ask && *topic == Topic::kClients) {
        // ?after=ID&limit=N: a page, lowest ids first (default 1000, at most 10000).
        std::uint64_t after = 0, limit = kDefaultPage;
        if (!pageOf(req.query, after, limit)) {
          return error(400, "after and limit are numbers (limit 1 to 10000)");
        }
        out.ask->number = after;
        out.ask->limit = static_cast<std::uint32_t>(limit) + 1;
        out.page = static_cast<std::uint32_t>(limit);
      }
      return out;
    }
  }
  if (auto c = action(seg, req.query)) {
    if (req.method != Method::kPost) {
      return notAllowed("POST");
    }
    if (!req.token_configured) {
      return error(403, "changing state over HTTP needs admin.token or admin.token_file");
    }
    return run(*c, env);
  }
  return error(404, "no such endpoint: see /api/v1/openapi.json");
}

ApiResponse completeApi(const ApiResponse& pending, const Gathered& g) {
  Reply r = complete(*pending.command, g);
  std::string next;
  // A page of clients: each worker sent its lowest page + 1 ids above `after`; of their union
  // (sorted by complete) the lowest `page` are the page, and one more means there is a next,
  // which starts after the page's last id.
  if (pending.page && r.rows && r.rows->rows.size() > pending.page) {
    r.rows->rows.resize(pending.page);
    const auto& id = r.rows->rows.back()[0];
    next = id ? *id : "";
  }
  ApiResponse out = render(r, pending.topic);
  if (!next.empty() && out.status == 200 && out.body.ends_with("}")) {
    out.body.insert(out.body.size() - 1, ",\"next\":" + next);
  }
  return out;
}

std::string openApiDocument(std::string_view version) {
  std::string schemas =
      "\"Error\":{\"type\":\"object\",\"required\":[\"error\"],\"properties\":{\"error\":{"
      "\"type\":\"string\"},\"sqlstate\":{\"type\":\"string\"},\"errors\":{\"type\":\"array\","
      "\"items\":{\"type\":\"object\",\"properties\":{\"line\":{\"type\":\"integer\"},"
      "\"column\":{\"type\":\"integer\"},\"message\":{\"type\":\"string\"}}}}}},"
      "\"Result\":{\"type\":\"object\",\"required\":[\"result\"],\"properties\":{\"result\":{"
      "\"type\":\"string\"},\"notices\":{\"type\":\"array\",\"items\":{\"type\":\"string\"}},"
      "\"missing\":{\"type\":\"array\",\"items\":{\"$ref\":\"#/components/schemas/Missing\"}}}},"
      "\"Missing\":{\"type\":\"object\",\"required\":[\"slot\",\"pid\",\"why\"],"
      "\"properties\":{\"slot\":{\"type\":\"integer\"},\"pid\":{\"type\":\"integer\"},"
      "\"why\":{\"type\":\"string\"}}}";
  std::string paths;
  auto errors = [](const char* codes) {
    std::string out;
    for (const char* c = codes; *c; c += 4) {
      out += ",\"" + std::string(c, 3) +
             "\":{\"description\":\"refused\",\"content\":{\"application/json\":{\"schema\":{"
             "\"$ref\":\"#/components/schemas/Error\"}}}}";
    }
    return out;
  };
  const std::string result =
      "\"200\":{\"description\":\"done\",\"content\":{\"application/json\":{\"schema\":{\"$ref\":"
      "\"#/components/schemas/Result\"}}}}";
  LiveState empty;
  for (const TopicSpec& t : topics()) {
    std::string name = base::toLowerAscii(t.keyword);
    View v = view(empty, t.topic);
    std::string props, required;
    for (const Column& c : v.columns) {
      props += std::string(props.empty() ? "" : ",") + jsonString(c.name) + ":{\"type\":\"" +
               jsonType(c.type) + "\",\"nullable\":true}";
      required += std::string(required.empty() ? "" : ",") + jsonString(c.name);
    }
    schemas += "," + jsonString(schemaName(t.keyword)) + ":{\"type\":\"object\",\"required\":[" +
               required + "],\"properties\":{" + props + "}}";
    // Lists gathered from the workers say which did not answer in time.
    std::string missing = sharedTopic(t.topic)
                              ? ""
                              : ",\"missing\":{\"type\":\"array\",\"items\":{\"$ref\":"
                                "\"#/components/schemas/Missing\"}}";
    std::string params;
    if (t.topic == Topic::kClients) {
      params =
          ",\"parameters\":[{\"name\":\"after\",\"in\":\"query\",\"schema\":{\"type\":"
          "\"integer\"}},{\"name\":\"limit\",\"in\":\"query\",\"schema\":{\"type\":"
          "\"integer\",\"minimum\":1,\"maximum\":10000,\"default\":1000}}]";
      missing +=
          ",\"next\":{\"type\":\"integer\",\"description\":\"after= of the next "
          "page; absent on the last\"}";
    }
    std::string get = "\"get\":{\"summary\":\"SHOW " + std::string(t.keyword) + "\"" + params +
                      ",\"responses\":{\"200\":{\"description\":\"rows\",\"content\":{"
                      "\"application/json\":{\"schema\":{\"type\":\"object\",\"required\":[" +
                      jsonString(name) + "],\"properties\":{" + jsonString(name) +
                      ":{\"type\":\"array\",\"items\":{\"$ref\":\"#/components/schemas/" +
                      schemaName(t.keyword) + "\"}}" + missing + "}}}}}" + errors("401 ") + "}}";
    if (t.topic == Topic::kConfig) {
      get +=
          ",\"put\":{\"summary\":\"replace the configuration file and reload (admin."
          "allow_config_write)\",\"requestBody\":{\"required\":true,\"content\":{"
          "\"application/yaml\":{\"schema\":{\"type\":\"string\"}}}},\"responses\":{" +
          result + errors("400 401 403 422 500 ") + "}}";
    }
    paths +=
        std::string(paths.empty() ? "" : ",") + jsonString("/api/v1/" + name) + ":{" + get + "}";
  }
  auto post = [&](const std::string& path, const std::string& summary, const char* param,
                  const char* codes) {
    std::string parameters;
    if (param) {
      parameters = ",\"parameters\":[{\"name\":\"" + std::string(param) +
                   "\",\"in\":\"path\",\"required\":true,\"schema\":{\"type\":\"string\"}}]";
    }
    paths += "," + jsonString(path) + ":{\"post\":{\"summary\":" + jsonString(summary) +
             parameters + ",\"security\":[{\"bearer\":[]}],\"responses\":{" + result +
             errors(codes) + "}}}";
  };
  for (const char* act : {"disable", "enable", "pause", "resume", "kill", "reconnect"}) {
    post("/api/v1/mappings/{name}/" + std::string(act), std::string(act) + " a mapping", "name",
         "401 403 404 501 ");
  }
  for (const char* act : {"drain", "undrain"}) {
    post("/api/v1/backends/{backend}/" + std::string(act),
         std::string(act) + " a backend (host:port)", "backend", "401 403 404 ");
  }
  post("/api/v1/clients/{id}/kill", "drop one client session", "id", "401 403 501 ");
  post("/api/v1/reload", "re-read the configuration (pgproxy -s reload)", nullptr, "401 403 503 ");
  post("/api/v1/shutdown", "stop pgproxy (?wait=true: after its sessions end)", nullptr,
       "401 403 503 ");
  return "{\"openapi\":\"3.0.3\",\"info\":{\"title\":\"pgproxy admin API\",\"version\":" +
         jsonString(version) +
         "},\"components\":{\"securitySchemes\":{\"bearer\":{\"type\":\"http\",\"scheme\":"
         "\"bearer\"}},\"schemas\":{" +
         schemas + "}},\"paths\":{" + paths + "}}";
}

std::string configErrorsJson(const std::string& error, const std::string& name) {
  std::string out = "[";
  std::size_t at = 0;
  while (at <= error.size()) {
    std::size_t end = error.find('\n', at);
    std::string line = error.substr(at, end == std::string::npos ? std::string::npos : end - at);
    at = end == std::string::npos ? error.size() + 1 : end + 1;
    if (line.empty()) {
      continue;
    }
    long row = 0, col = 0;
    std::string message = line;
    if (line.rfind(name + ":", 0) == 0) {
      const char* p = line.c_str() + name.size() + 1;
      char* e1 = nullptr;
      long r = std::strtol(p, &e1, 10);
      if (e1 != p && *e1 == ':') {
        char* e2 = nullptr;
        long c = std::strtol(e1 + 1, &e2, 10);
        if (e2 != e1 + 1 && *e2 == ':') {
          row = r;
          col = c;
          message = std::string(e2 + 1);
          message.erase(0, message.find_first_not_of(' '));
        }
      }
    }
    out += std::string(out.size() > 1 ? "," : "") + "{\"line\":" + std::to_string(row) +
           ",\"column\":" + std::to_string(col) + ",\"message\":" + jsonString(message) + "}";
  }
  return out + "]";
}

}  // namespace pgproxy::admin
