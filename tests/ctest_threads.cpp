// Under ctest (ONEBIT_CTEST=1) every test case is a process of its own and `ctest -j N` runs
// N of them at once, so each one keeps to OMP_NUM_THREADS threads, one unless set. This is
// done here, before any test runs, because catch_discover_tests (Catch2 2.x) splits a list
// value in ENVIRONMENT and so cannot set a second variable beside ONEBIT_CTEST. The variable
// is exported too, for the programs and Python references the tests start.
#include <ATen/Parallel.h>

#include <cstdlib>
#include <string>

namespace {
const bool kThreadsPinned = [] {
  if (!std::getenv("ONEBIT_CTEST")) return false;
  const char* env = std::getenv("OMP_NUM_THREADS");
  if (!env || !*env) {
    ::setenv("OMP_NUM_THREADS", "1", 1);
    env = "1";
  }
  const int n = std::atoi(env);
  at::set_num_threads(n > 0 ? n : 1);
  return true;
}();
}  // namespace

#include "tests/support.h"

TEST_CASE("under ctest a test process keeps to OMP_NUM_THREADS threads, one by default", "[core]") {
  OB_REQUIRE_OR_SKIP(std::getenv("ONEBIT_CTEST"), "only under ctest (ONEBIT_CTEST=1)");
  const char* env = std::getenv("OMP_NUM_THREADS");
  REQUIRE(env != nullptr);
  CHECK(at::get_num_threads() == std::atoi(env));
  CHECK(at::get_num_threads() >= 1);
}
