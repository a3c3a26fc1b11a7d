// Binaries built on one machine and run from another checkout (scripts/gpu-prebuild.sh, then
// scripts/gpu-check.sh on a GPU node) find the checkout, the build folder and bench/py through
// environment variables that take precedence over the paths compiled in.
#define ONEBIT_BENCH_PY_DIR "/compiled/in/bench/py"  // onebit_tests is no bench target

#include <cstdlib>
#include <optional>
#include <string>

#include "bench/python.h"
#include "tests/support.h"

namespace {
// Sets (or, with nullopt, unsets) an environment variable for one scope, then restores it.
class ScopedEnv {
 public:
  ScopedEnv(const char* name, const std::optional<std::string>& value) : name_(name) {
    if (const char* old = std::getenv(name)) old_ = old;
    if (value) ::setenv(name, value->c_str(), 1);
    else ::unsetenv(name);
  }
  ~ScopedEnv() {
    if (old_) ::setenv(name_, old_->c_str(), 1);
    else ::unsetenv(name_);
  }

 private:
  const char* name_;
  std::optional<std::string> old_;
};
}  // namespace

TEST_CASE("ONEBIT_SOURCE_DIR, ONEBIT_BINARY_DIR and ONEBIT_BENCH_PY_DIR override the compiled-in paths",
          "[core]") {
  using onebit::test::binary_dir;
  using onebit::test::source_dir;
  {
    ScopedEnv src("ONEBIT_SOURCE_DIR", std::nullopt), bin("ONEBIT_BINARY_DIR", std::nullopt),
        py("ONEBIT_BENCH_PY_DIR", std::nullopt);
    CHECK(source_dir() == std::filesystem::path(ONEBIT_SOURCE_DIR));
    CHECK(binary_dir() == std::filesystem::path(ONEBIT_BINARY_DIR));
    CHECK(onebit::bench::py_script("distill_step.py") == "/compiled/in/bench/py/distill_step.py");
  }
  ScopedEnv src("ONEBIT_SOURCE_DIR", "/node/checkout"), bin("ONEBIT_BINARY_DIR", "/node/scratch"),
      py("ONEBIT_BENCH_PY_DIR", "/node/checkout/bench/py");
  CHECK(source_dir() == std::filesystem::path("/node/checkout"));
  CHECK(binary_dir() == std::filesystem::path("/node/scratch"));
  CHECK(onebit::bench::py_script("distill_step.py") == "/node/checkout/bench/py/distill_step.py");
}
