#pragma once
// The tokenizers the unit tests count with, loaded from the ranks scripts/setup.sh
// extracts (a test fails, rather than crashes, without them).

#include "core/tokenizer.hpp"

#include <gtest/gtest.h>

#include <memory>

namespace lowart::testing {

inline std::shared_ptr<const bpe_tokenizer> load_tokenizer(const char* name) {
  try {
    return bpe_tokenizer::load(LOWART_TOKENIZER_DIR, name);
  } catch (const std::exception& e) {
    ADD_FAILURE() << e.what();
    return nullptr;
  }
}

} // namespace lowart::testing
