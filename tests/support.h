// Shared helpers for the Catch2 suite: locating ../shared and Python, and skipping.
#pragma once
#include <sys/wait.h>

#include <cstdio>
#include <cstdlib>
#include <filesystem>
#include <iostream>
#include <string>
#include <utility>

// LibTorch before Catch2: c10's logging header defines a one-argument CHECK(condition), and a
// test file that includes torch after Catch2 would otherwise get c10's CHECK (the main build's
// precompiled header already puts torch first; the fuzz project's sanitized_tests has none).
#include <torch/torch.h>

#if defined(ONEBIT_CATCH3)
#include <catch2/catch_all.hpp>
#define OB_CONTAINS(s) Catch::Matchers::ContainsSubstring(s)
#else
#include <catch2/catch.hpp>
#define OB_CONTAINS(s) Catch::Contains(s)
#endif
// Tests check error text with CHECK_THROWS_WITH(expr, OB_CONTAINS("what went wrong")).

namespace onebit::test {

// Root of the shared data (env ONEBIT_SHARED overrides ../shared beside the checkout).
inline std::filesystem::path shared_dir() {
  if (const char* env = std::getenv("ONEBIT_SHARED")) return env;
  return ONEBIT_SHARED_DEFAULT;
}
// The checkout (env ONEBIT_SOURCE_DIR overrides the configured one: programs built elsewhere).
inline std::filesystem::path source_dir() {
  if (const char* env = std::getenv("ONEBIT_SOURCE_DIR")) return env;
  return ONEBIT_SOURCE_DIR;
}
// The build folder (env ONEBIT_BINARY_DIR overrides the configured one: programs built elsewhere).
inline std::filesystem::path binary_dir() {
  if (const char* env = std::getenv("ONEBIT_BINARY_DIR")) return env;
  return ONEBIT_BINARY_DIR;
}

// Python interpreter with torch + transformers (env ONEBIT_PYTHON overrides the configured one).
inline std::string python() {
  if (const char* env = std::getenv("ONEBIT_PYTHON")) return env;
  return ONEBIT_PYTHON_DEFAULT;
}

// Skip the current test with a message. Under ctest (ONEBIT_CTEST=1, one test case per
// process) it exits with 77, which ctest reports as "Skipped"; run by hand, it warns and
// the caller returns.
inline void skip(const std::string& why) {
  std::cerr << "SKIPPED: " << why << std::endl;
  if (std::getenv("ONEBIT_CTEST")) std::_Exit(77);
  WARN("SKIPPED: " << why);
}

// Runs a shell command; returns its exit status (-1 when it did not exit) and its stdout
// (append " 2>&1" to the command for stderr too).
inline std::pair<int, std::string> run_shell(const std::string& cmd) {
  std::string out;
  FILE* p = ::popen(cmd.c_str(), "r");
  if (!p) return {-1, ""};
  char buf[4096];
  for (size_t n; (n = std::fread(buf, 1, sizeof buf, p)) > 0;) out.append(buf, n);
  const int status = ::pclose(p);
  return {WIFEXITED(status) ? WEXITSTATUS(status) : -1, out};
}

}  // namespace onebit::test

// Skips the test (and returns from it) when `cond` is false.
#define OB_REQUIRE_OR_SKIP(cond, why)         \
  do {                                        \
    if (!(cond)) {                            \
      ::onebit::test::skip(why);              \
      return;                                 \
    }                                         \
  } while (0)

// Path under ../shared, or skip when it is absent.
#define OB_SHARED_OR_SKIP(var, rel)                                                       \
  const std::filesystem::path var = ::onebit::test::shared_dir() / (rel);                 \
  OB_REQUIRE_OR_SKIP(std::filesystem::exists(var), "needs ../shared/" + std::string(rel) + \
                                                     " (absent: " + var.string() + ")")
