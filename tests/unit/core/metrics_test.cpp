#include "core/metrics.hpp"

#include <gtest/gtest.h>

#include <cstdio>
#include <cstdlib>
#include <fstream>

using namespace lowart;

TEST(metrics, render_contains_required_families_with_labels) {
  metrics::http_requests("chat", 200).inc();
  metrics::http_request_duration("chat").observe(0.002);
  metrics::tokens("gpt-demo", "prompt").inc(57);
  metrics::upstream_requests("mock/mock-model", "200").inc();
  auto text = metrics::render();
  EXPECT_NE(text.find("http_requests_total{route=\"chat\",status=\"200\"}"), std::string::npos);
  EXPECT_NE(text.find("http_request_duration_seconds_bucket{route=\"chat\",le=\"0.0025\"}"), std::string::npos);
  EXPECT_NE(text.find("gateway_tokens_total{model=\"gpt-demo\",type=\"prompt\"} 57"), std::string::npos);
  EXPECT_NE(text.find("gateway_upstream_requests_total{deployment=\"mock/mock-model\",status=\"200\"}"),
            std::string::npos);
}

TEST(metrics, handles_are_stable_and_count) {
  auto a = metrics::http_requests("models", 404);
  auto b = metrics::http_requests("models", 404);
  auto before = a.value();
  a.inc();
  b.inc();
  EXPECT_DOUBLE_EQ(a.value(), before + 2);
}

TEST(metrics, promtool_accepts_the_exposition) {
  // The test command installs promtool (Debian package `prometheus`); its absence is a failure.
  ASSERT_EQ(std::system("command -v promtool >/dev/null 2>&1"), 0) << "promtool is not installed";
  auto path = ::testing::TempDir() + "lowart_metrics.txt";
  std::ofstream(path) << metrics::render();
  auto cmd = "promtool check metrics < " + path + " 2>&1";
  EXPECT_EQ(std::system(cmd.c_str()), 0);
  std::remove(path.c_str());
}
