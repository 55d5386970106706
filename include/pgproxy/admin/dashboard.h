#pragma once

#include <string_view>

namespace pgproxy::admin {

// The web dashboard served at / on admin.listen: one HTML page with its script inline, which
// reads and drives the REST API (rest_api.h). It holds no data itself, so it is served without
// the token; every API call it makes carries the one the operator types.
std::string_view dashboardPage();

}  // namespace pgproxy::admin
