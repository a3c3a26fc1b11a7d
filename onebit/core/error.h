// onebit::Error: the one exception type of the library. Messages are one line that
// says what went wrong and where (file, tensor, key); programs print it and exit 1.
#pragma once
#include <sstream>
#include <stdexcept>
#include <string>
#include <utility>

namespace onebit {

class Error : public std::runtime_error {
 public:
  using std::runtime_error::runtime_error;
};

namespace detail {
template <class... Parts>
std::string concat(Parts&&... parts) {
  std::ostringstream os;
  (os << ... << std::forward<Parts>(parts));
  return os.str();
}
}  // namespace detail

// fail("tensor '", name, "' has shape ", shape): throws onebit::Error with the parts joined.
template <class... Parts>
[[noreturn]] void fail(Parts&&... parts) {
  throw Error(detail::concat(std::forward<Parts>(parts)...));
}

}  // namespace onebit

// OB_CHECK(cond, parts...): throw onebit::Error(parts...) unless cond holds.
#define OB_CHECK(cond, ...)            \
  do {                                 \
    if (!(cond)) ::onebit::fail(__VA_ARGS__); \
  } while (0)

#include <functional>
namespace onebit {
// Runs a program body; turns onebit::Error, c10::Error and std::exception into one line
// "<prog>: error: <message>" on stderr and exit code 1 (never an abort trace).
int guarded_main(const char* prog, const std::function<int()>& body);
}  // namespace onebit
