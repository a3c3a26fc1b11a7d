// Internal to onebit/tokenizer: UTF-8 helpers shared by the tokenizers.
#pragma once
#include <cstdint>
#include <string>
#include <string_view>

namespace onebit::tokenizer::detail {

void append_utf8(std::string& out, uint32_t cp);
bool valid_utf8(std::string_view s);
// Valid UTF-8 with each maximal invalid subsequence replaced by U+FFFD (as Python's
// errors="replace" and Rust's from_utf8_lossy do).
std::string utf8_lossy(std::string_view s);
// Decodes the code point at s[i] (valid UTF-8 assumed) and advances i past it.
uint32_t next_cp(std::string_view s, size_t& i);

}  // namespace onebit::tokenizer::detail
