#include "core/redact.hpp"

#include <gtest/gtest.h>
#include <simdjson.h>

#include <functional>

using lowart::redact_json_text;

namespace {
const std::vector<std::string> fields = {"password", "api_key", "Authorization"};
}

TEST(redact, string_values_of_listed_members_at_any_depth_and_any_case) {
  EXPECT_EQ(redact_json_text(R"({"user":"ada","password":"hunter2","n":{"API_KEY" : "sk-1","k":2}})", fields),
            R"({"user":"ada","password":"[redacted]","n":{"API_KEY" : "[redacted]","k":2}})");
  // Not a member name (an array element, a value) or not a string value: left.
  EXPECT_EQ(redact_json_text(R"(["password","x"])", fields), R"(["password","x"])");
  EXPECT_EQ(redact_json_text(R"({"password":12,"a":"password"})", fields), R"({"password":12,"a":"password"})");
  // Escapes inside strings do not end them.
  EXPECT_EQ(redact_json_text(R"({"note":"say \"password\": \"x\"","password":"a\"b"})", fields),
            R"({"note":"say \"password\": \"[redacted]\"","password":"[redacted]"})");
}

TEST(redact, text_cut_at_the_capture_limit_and_sse_events) {
  // A value cut off by the limit is redacted to its end; the rest never leaks.
  EXPECT_EQ(redact_json_text(R"({"a":1,"password":"hunt)", fields), R"({"a":1,"password":"[redacted])");
  EXPECT_EQ(redact_json_text("data: {\"authorization\":\"Bearer x\"}\n\ndata: [DONE]\n\n", fields),
            "data: {\"authorization\":\"[redacted]\"}\n\ndata: [DONE]\n\n");
}

TEST(redact, json_held_as_a_string_inside_json) {
  // Tool-call arguments are JSON inside a string.
  auto out = redact_json_text(R"({"arguments":"{\"password\":\"s3cret\",\"city\":\"Oslo\"}"})", fields);
  EXPECT_EQ(out, R"({"arguments":"{\"password\":\"[redacted]\",\"city\":\"Oslo\"}"})");
}

// Generated documents: whatever the nesting and spacing, the result is still valid JSON,
// every listed value is gone and every other value is kept.
TEST(redact, property_generated_documents_stay_json_and_lose_only_listed_values) {
  std::uint64_t seed = 12345;
  auto next = [&] {
    seed = seed * 6364136223846793005ULL + 1442695040888963407ULL;
    return static_cast<unsigned>(seed >> 33);
  };
  const std::vector<std::string> names = {"password", "Password", "user", "api_key", "text", "authorization"};
  for (int round = 0; round < 300; ++round) {
    std::vector<std::string> secrets, keeps;
    std::function<std::string(int)> value = [&](int depth) -> std::string {
      auto pick = next() % (depth > 3 ? 2 : 4);
      if (pick == 0) {
        auto s = "v" + std::to_string(next()) + (next() % 3 == 0 ? "\\\"q" : "");
        return "\"" + s + "\"";
      }
      if (pick == 1) return std::to_string(next() % 1000);
      if (pick == 2) {
        std::string a = "[";
        for (unsigned i = 0, n = next() % 3; i < n; ++i)
          a += (i ? "," : "") + value(depth + 1);
        return a + "]";
      }
      std::string o = "{";
      for (unsigned i = 0, n = next() % 4; i < n; ++i) {
        const auto& name = names[next() % names.size()];
        auto v = "\"s" + std::to_string(next()) + "\"";
        bool secret = name == "password" || name == "Password" || name == "api_key" || name == "authorization";
        bool as_string = next() % 2 == 0;
        std::string member = as_string ? v : value(depth + 1);
        if (as_string) (secret ? secrets : keeps).push_back(v);
        o += (i ? "," : "") + std::string(next() % 2 ? " " : "") + "\"" + name + "\"" + (next() % 2 ? " : " : ":") +
             member;
      }
      return o + "}";
    };
    auto doc = value(0);
    auto out = redact_json_text(doc, fields);
    simdjson::dom::parser parser;
    simdjson::dom::element e;
    ASSERT_EQ(parser.parse(out).get(e), simdjson::SUCCESS) << doc << "\n-> " << out;
    for (const auto& s : secrets)
      EXPECT_EQ(out.find(s), std::string::npos) << s << " in " << out;
    for (const auto& k : keeps)
      EXPECT_NE(out.find(k), std::string::npos) << k << " lost from " << out;
  }
}
