// libFuzzer target: lowart.toml parsing and validation on arbitrary text must end in a
// configuration or an error message, never a crash or an exception.
#include "config/config.hpp"

#include <cstdint>
#include <cstdlib>
#include <string>

extern "C" int LLVMFuzzerTestOneInput(const std::uint8_t* data, std::size_t size) {
  std::string text(reinterpret_cast<const char*>(data), size);
  auto r = lowart::config::parse(text, "fuzz.toml");
  if (!r.config && r.error.empty()) std::abort(); // a refusal must say why
  if (r.config) (void)lowart::config::validate(*r.config);
  return 0;
}
