#include "pgproxy/sql/read_only.h"

#include <algorithm>
#include <array>
#include <iterator>

#include "pgproxy/base/text.h"
#include "pgproxy/sql/lexer.h"

namespace pgproxy::sql {
namespace {

// Names that may stand before '(' in a statement that only reads: PostgreSQL's keywords that
// take a parenthesised list (IN (...), CAST(...), OVER (...)) and its own functions that neither
// write nor fail on a standby. Anything else before '(' is a call pgproxy cannot vouch for
// (nextval, txid_current, a user's function that inserts) and sends the transaction to the
// primary. Sorted, lower case: binary search, no allocation.
constexpr std::string_view kReadOnlyCalls[] = {
    "abs",
    "age",
    "all",
    "and",
    "any",
    "array",
    "array_agg",
    "array_append",
    "array_cat",
    "array_length",
    "array_lower",
    "array_position",
    "array_positions",
    "array_prepend",
    "array_remove",
    "array_replace",
    "array_to_json",
    "array_to_string",
    "array_upper",
    "as",
    "ascii",
    "avg",
    "between",
    "bit_and",
    "bit_length",
    "bit_or",
    "bool_and",
    "bool_or",
    "btrim",
    "by",
    "cardinality",
    "case",
    "cast",
    "cbrt",
    "ceil",
    "ceiling",
    "char_length",
    "character_length",
    "chr",
    "clock_timestamp",
    "coalesce",
    "concat",
    "concat_ws",
    "corr",
    "count",
    "cube",
    "cume_dist",
    "current_setting",
    "current_time",
    "current_timestamp",
    "date_bin",
    "date_part",
    "date_trunc",
    "decode",
    "dense_rank",
    "distinct",
    "div",
    "else",
    "encode",
    "every",
    "except",
    "exists",
    "exp",
    "extract",
    "filter",
    "first_value",
    "floor",
    "format",
    "from",
    "gcd",
    "gen_random_uuid",
    "generate_series",
    "generate_subscripts",
    "greatest",
    "group",
    "grouping",
    "having",
    "ilike",
    "in",
    "initcap",
    "intersect",
    "interval",
    "is",
    "isfinite",
    "join",
    "json_agg",
    "json_array_elements",
    "json_array_elements_text",
    "json_array_length",
    "json_build_array",
    "json_build_object",
    "json_each",
    "json_each_text",
    "json_extract_path",
    "json_extract_path_text",
    "json_object_agg",
    "json_object_keys",
    "json_typeof",
    "jsonb_agg",
    "jsonb_array_elements",
    "jsonb_array_elements_text",
    "jsonb_array_length",
    "jsonb_build_array",
    "jsonb_build_object",
    "jsonb_each",
    "jsonb_each_text",
    "jsonb_extract_path",
    "jsonb_extract_path_text",
    "jsonb_insert",
    "jsonb_object_agg",
    "jsonb_object_keys",
    "jsonb_path_exists",
    "jsonb_path_match",
    "jsonb_path_query",
    "jsonb_path_query_array",
    "jsonb_path_query_first",
    "jsonb_pretty",
    "jsonb_set",
    "jsonb_strip_nulls",
    "jsonb_typeof",
    "justify_days",
    "justify_hours",
    "justify_interval",
    "lag",
    "last_value",
    "lateral",
    "lcm",
    "lead",
    "least",
    "left",
    "length",
    "like",
    "limit",
    "ln",
    "localtime",
    "localtimestamp",
    "log",
    "log10",
    "lower",
    "lpad",
    "ltrim",
    "make_date",
    "make_interval",
    "make_time",
    "make_timestamp",
    "make_timestamptz",
    "max",
    "md5",
    "min",
    "mod",
    "mode",
    "not",
    "now",
    "nth_value",
    "ntile",
    "nullif",
    "num_nonnulls",
    "num_nulls",
    "octet_length",
    "offset",
    "on",
    "or",
    "over",
    "overlay",
    "partition",
    "percent_rank",
    "percentile_cont",
    "percentile_disc",
    "pg_backend_pid",
    "pg_is_in_recovery",
    "plainto_tsquery",
    "position",
    "power",
    "random",
    "range",
    "rank",
    "regexp_count",
    "regexp_like",
    "regexp_match",
    "regexp_matches",
    "regexp_replace",
    "regexp_split_to_array",
    "regexp_split_to_table",
    "repeat",
    "replace",
    "reverse",
    "right",
    "rollup",
    "round",
    "row",
    "row_number",
    "row_to_json",
    "rows",
    "rpad",
    "rtrim",
    "select",
    "sets",
    "sign",
    "similar",
    "some",
    "split_part",
    "sqrt",
    "starts_with",
    "statement_timestamp",
    "stddev",
    "stddev_pop",
    "stddev_samp",
    "string_agg",
    "string_to_array",
    "strpos",
    "substr",
    "substring",
    "sum",
    "then",
    "timezone",
    "to_char",
    "to_date",
    "to_json",
    "to_jsonb",
    "to_number",
    "to_timestamp",
    "to_tsquery",
    "to_tsvector",
    "transaction_timestamp",
    "translate",
    "trim",
    "trunc",
    "ts_headline",
    "ts_rank",
    "union",
    "unnest",
    "upper",
    "using",
    "values",
    "var_pop",
    "var_samp",
    "variance",
    "websearch_to_tsquery",
    "when",
    "where",
    "with",
    "within",
};

// Keywords that make a statement that otherwise reads write, lock, or fail on a standby: FOR
// UPDATE / NO KEY UPDATE / SHARE / KEY SHARE, SELECT INTO, a data-modifying CTE.
constexpr std::string_view kWriteWords[] = {"delete", "insert", "into", "merge", "share", "update"};
static_assert(std::is_sorted(std::begin(kReadOnlyCalls), std::end(kReadOnlyCalls)));
static_assert(std::is_sorted(std::begin(kWriteWords), std::end(kWriteWords)));

constexpr std::size_t kMaxName = 64;  // PostgreSQL's NAMEDATALEN; longer is no name we list

// `word` lower-cased into `buf`; empty when it is too long to be one we know.
std::string_view folded(std::string_view word, std::array<char, kMaxName>& buf) {
  if (word.size() > buf.size()) {
    return {};
  }
  for (std::size_t i = 0; i < word.size(); ++i) {
    buf[i] = lower(word[i]);
  }
  return std::string_view(buf.data(), word.size());
}

template <std::size_t N>
bool listed(const std::string_view (&list)[N], std::string_view word) {
  std::array<char, kMaxName> buf;
  std::string_view w = folded(word, buf);
  return !w.empty() && std::binary_search(std::begin(list), std::end(list), w);
}

// The leading comment's hint, if the text starts with one.
bool leadingHint(std::string_view sql, Target& out) {
  std::size_t i = 0;
  while (i < sql.size() && isSpace(static_cast<unsigned char>(sql[i]))) {
    ++i;
  }
  if (sql.substr(i, 2) != "/*") {
    return false;
  }
  std::size_t close = sql.find("*/", i + 2);
  if (close == std::string_view::npos) {
    return false;
  }
  std::string_view body = sql.substr(i + 2, close - i - 2);
  auto trim = [](std::string_view s) {
    while (!s.empty() && isSpace(static_cast<unsigned char>(s.front()))) {
      s.remove_prefix(1);
    }
    while (!s.empty() && isSpace(static_cast<unsigned char>(s.back()))) {
      s.remove_suffix(1);
    }
    return s;
  };
  body = trim(body);
  if (body.size() < 8 || !iequals(body.substr(0, 8), "pgproxy:")) {
    return false;
  }
  std::string_view word = trim(body.substr(8));
  if (iequals(word, "primary")) {
    out = Target::kPrimary;
    return true;
  }
  if (iequals(word, "standby")) {
    out = Target::kStandby;
    return true;
  }
  return false;
}

// What one statement is, from its tokens as they stream by.
struct StatementScan {
  enum class First {
    kNone,      // no token yet
    kRead,      // SELECT, VALUES, TABLE, WITH, SHOW: reads unless a later token says otherwise
    kBegin,     // BEGIN, START TRANSACTION
    kSetTx,     // SET TRANSACTION
    kSet,       // SET [SESSION] ...
    kSetLocal,  // SET LOCAL ...
    kReset,     // RESET ...
    kOther,
  };
  First first = First::kNone;
  std::size_t count = 0;
  int depth = 0;
  bool writes = false;
  bool read_only = false;   // READ ONLY among its words
  bool read_write = false;  // READ WRITE
  bool serializable = false;
  bool route_name = false;  // names pgproxy.route (SET / RESET)
  bool reset_all = false;   // RESET ALL
  std::string_view value;   // SET pgproxy.route's value token
  const char* reason = "";
  // The last three tokens, for calls (name '(' / schema '.' name '(') and casts ('::' name '(').
  Token prev[3];
  std::string_view prevText[3];
};

}  // namespace

ReadOnlyFunctions::ReadOnlyFunctions(std::vector<std::string> names) {
  for (const auto& n : names) {
    extra_.push_back(base::toLowerAscii(n));
  }
  std::sort(extra_.begin(), extra_.end());
}

bool ReadOnlyFunctions::contains(std::string_view schema, std::string_view name) const {
  std::array<char, kMaxName> nbuf, sbuf;
  std::string_view n = folded(name, nbuf);
  if (n.empty()) {
    return false;
  }
  if (schema.empty() || iequals(schema, "pg_catalog")) {
    if (listed(kReadOnlyCalls, n)) {
      return true;
    }
    if (std::binary_search(extra_.begin(), extra_.end(), n)) {
      return true;
    }
  }
  if (schema.empty() || extra_.empty()) {
    return false;
  }
  std::string_view s = folded(schema, sbuf);
  if (s.empty()) {
    return false;
  }
  // schema.name, without building the string: compare against each listed qualified name.
  auto it = std::lower_bound(extra_.begin(), extra_.end(), s);
  for (; it != extra_.end() && std::string_view(*it).substr(0, s.size()) == s; ++it) {
    std::string_view q = *it;
    if (q.size() == s.size() + 1 + n.size() && q[s.size()] == '.' && q.substr(s.size() + 1) == n) {
      return true;
    }
  }
  return false;
}

SplitDecision classifyForSplit(std::string_view sql, const ReadOnlyFunctions& functions) {
  SplitDecision d;
  Target hint;
  bool hinted = leadingHint(sql, hint);

  Lexer lex(sql);
  StatementScan st;
  std::size_t statements = 0;
  bool all_read = true;
  bool all_settings = true;    // every statement a read or a SET / RESET of a setting
  bool read_only_tx = false;   // the transaction starts READ ONLY
  bool pending_begin = false;  // the previous statement was a plain BEGIN
  const char* reason = "";

  auto finish = [&]() {
    using First = StatementScan::First;
    if (st.first == First::kNone) {
      return;  // ";;" or comments only
    }
    ++statements;
    bool stmt_read = false;
    switch (st.first) {
      case First::kRead:
        stmt_read = !st.writes && st.depth == 0;
        if (!stmt_read) {
          reason = st.reason;
        }
        break;
      case First::kBegin:
        if (st.read_only && !st.read_write && !st.serializable && statements == 1) {
          read_only_tx = true;
        } else if (statements == 1 && !st.read_only && !st.read_write && !st.serializable) {
          pending_begin = true;
          d.explicit_begin = true;
        }
        reason = "a transaction not declared READ ONLY";
        break;
      case First::kSetTx:
        if (st.read_only && !st.read_write && !st.serializable &&
            (statements == 1 || (statements == 2 && pending_begin))) {
          read_only_tx = true;
          d.explicit_begin = false;
        }
        reason = "SET TRANSACTION";
        break;
      case First::kSet:
      case First::kReset:
        if (st.route_name || st.reset_all) {
          d.sets_route = true;
          d.route = RouteSetting::kAuto;
          if (st.first == First::kSet && st.route_name) {
            std::string_view v = st.value;
            if (v.size() >= 2 && v.front() == '\'' && v.back() == '\'') {
              v = v.substr(1, v.size() - 2);
            }
            d.route = iequals(v, "primary")   ? RouteSetting::kPrimary
                      : iequals(v, "standby") ? RouteSetting::kStandby
                                              : RouteSetting::kAuto;
          }
        }
        reason = "SET";
        break;
      default:
        reason = "a statement that is not a SELECT";
        break;
    }
    if (st.first != First::kBegin) {
      pending_begin = false;
    }
    if (statements > 1 && !stmt_read) {
      d.explicit_begin = false;  // the transaction writes, or does what a standby may refuse
    }
    all_read = all_read && stmt_read;
    all_settings = all_settings && (stmt_read || st.first == First::kSet ||
                                    st.first == First::kReset || st.first == First::kSetLocal);
    st = StatementScan{};
  };

  for (Token t = lex.next(); t.type != Tok::kEnd; t = lex.next()) {
    std::string_view text = sql.substr(t.begin, t.end - t.begin);
    if (t.type == Tok::kPunct && t.quote == ';' && st.depth == 0) {
      finish();
      continue;
    }
    using First = StatementScan::First;
    if (st.count == 0) {
      if (t.type != Tok::kIdent) {
        st.first = t.type == Tok::kPunct && t.quote == '(' ? First::kRead : First::kOther;
        // "(SELECT ...)" reads like SELECT; anything else that starts with a symbol is not SQL
        // pgproxy sends to a standby.
      } else if (iequals(text, "select") || iequals(text, "values") || iequals(text, "table") ||
                 iequals(text, "with") || iequals(text, "show")) {
        st.first = First::kRead;
      } else if (iequals(text, "begin") || iequals(text, "start")) {
        st.first = First::kBegin;
      } else if (iequals(text, "set")) {
        st.first = First::kSet;
      } else if (iequals(text, "reset")) {
        st.first = First::kReset;
      } else {
        st.first = First::kOther;
      }
    } else if (st.count == 1 && st.first == First::kSet && t.type == Tok::kIdent) {
      if (iequals(text, "transaction")) {
        st.first = First::kSetTx;
      } else if (iequals(text, "local")) {
        st.first = First::kSetLocal;
      }
    } else if (st.count == 1 && st.first == First::kReset && t.type == Tok::kIdent &&
               iequals(text, "all")) {
      st.reset_all = true;
    }
    // pgproxy.route: SET [SESSION] pgproxy.route {TO|=} value / RESET pgproxy.route.
    if ((st.first == First::kSet || st.first == First::kReset) && t.type == Tok::kIdent &&
        iequals(text, "route") && st.count >= 2 && st.prev[0].type == Tok::kPunct &&
        st.prev[0].quote == '.' && iequals(st.prevText[1], "pgproxy")) {
      st.route_name = true;
    } else if (st.route_name && st.value.empty() &&
               (t.type == Tok::kIdent || t.type == Tok::kString) && !iequals(text, "to")) {
      st.value = text;
    }
    if (t.type == Tok::kIdent) {
      if (iequals(text, "only") && iequals(st.prevText[0], "read")) {
        st.read_only = true;
      } else if (iequals(text, "write") && iequals(st.prevText[0], "read")) {
        st.read_write = true;
      } else if (iequals(text, "serializable")) {
        st.serializable = true;  // a standby refuses serializable transactions
      }
      if (st.first == First::kRead && !st.writes && listed(kWriteWords, text)) {
        st.writes = true;
        st.reason = "FOR UPDATE/SHARE, INTO or a data-modifying statement";
      }
    }
    if (t.type == Tok::kPunct && t.quote == '(') {
      // A call: name '(' or schema '.' name '('. Not one after AS (a column alias list) or
      // '::' (a type's modifiers).
      const Token& name = st.prev[0];
      bool named = st.count > 0 && (name.type == Tok::kIdent || name.type == Tok::kQuotedIdent);
      bool qualified = named && st.prev[1].type == Tok::kPunct && st.prev[1].quote == '.' &&
                       (st.prev[2].type == Tok::kIdent || st.prev[2].type == Tok::kQuotedIdent);
      bool alias = named && !qualified && iequals(st.prevText[1], "as");
      bool cast = named && st.prev[1].type == Tok::kPunct && st.prev[1].quote == ':';
      if (st.first == First::kRead && !st.writes && named && !alias && !cast) {
        std::string_view fn = st.prevText[0];
        std::string_view schema = qualified ? st.prevText[2] : std::string_view();
        // A quoted name is the name as written: "count" is count, "Count" is no function
        // pgproxy knows.
        bool quoted = name.type == Tok::kQuotedIdent;
        bool known = false;
        if (quoted) {
          fn = fn.size() >= 2 ? fn.substr(1, fn.size() - 2) : fn;
          std::array<char, kMaxName> buf;
          known = folded(fn, buf) == fn && functions.contains(schema, fn);
        } else {
          known = functions.contains(schema, fn);
        }
        if (!known) {
          st.writes = true;
          st.reason = "a call of a function not known to be read-only (read_only_functions)";
        }
      }
      ++st.depth;
    } else if (t.type == Tok::kPunct && t.quote == ')' && st.depth > 0) {
      --st.depth;
    }
    st.prev[2] = st.prev[1];
    st.prevText[2] = st.prevText[1];
    st.prev[1] = st.prev[0];
    st.prevText[1] = st.prevText[0];
    st.prev[0] = t;
    st.prevText[0] = text;
    ++st.count;
  }
  finish();

  if (lex.unterminated()) {
    d.reason = "an unterminated quote or comment";
  } else if (read_only_tx) {
    d.target = Target::kStandby;
    d.explicit_begin = false;
  } else if (statements > 0 && all_read) {
    d.target = Target::kStandby;
  } else {
    d.reason = statements == 0 ? "an empty query" : reason;
  }
  d.writes = !lex.unterminated() && !read_only_tx && (statements == 0 || !all_settings);
  d.writes = d.writes || lex.unterminated();
  if (hinted) {
    d.target = hint;
    d.hinted = true;
    d.reason = "the hint";
  }
  return d;
}

}  // namespace pgproxy::sql
