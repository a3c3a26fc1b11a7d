// Small string helpers shared by the library (C++17 has no std::string::ends_with).
#pragma once
#include <string_view>

namespace onebit {

inline bool ends_with(std::string_view s, std::string_view suffix) {
  return s.size() >= suffix.size() && s.compare(s.size() - suffix.size(), suffix.size(), suffix) == 0;
}

}  // namespace onebit
