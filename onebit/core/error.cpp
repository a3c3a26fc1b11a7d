#include "onebit/core/error.h"

#include <c10/util/Exception.h>

#include <iostream>

namespace onebit {

namespace {
std::string first_line(const std::string& s) {
  auto nl = s.find('\n');
  return nl == std::string::npos ? s : s.substr(0, nl);
}
}  // namespace

int guarded_main(const char* prog, const std::function<int()>& body) {
  try {
    return body();
  } catch (const Error& e) {
    std::cerr << prog << ": error: " << e.what() << std::endl;
  } catch (const c10::Error& e) {
    std::cerr << prog << ": error: " << first_line(e.what_without_backtrace()) << std::endl;
  } catch (const std::exception& e) {
    std::cerr << prog << ": error: " << first_line(e.what()) << std::endl;
  }
  return 1;
}

}  // namespace onebit
