// Skips for missing references that fail instead under ONEBIT_REQUIRE_REFERENCES=1 (.ci/run
// sets it): a Python package the test compares against, ../shared data, the SmolLM2 fixture.
// GPU and optional-build-feature skips are not references and keep OB_REQUIRE_OR_SKIP.
#pragma once
#include <cstdlib>
#include <filesystem>
#include <string>

#include "tests/support.h"

namespace onebit::test {

inline bool references_required() {
  const char* env = std::getenv("ONEBIT_REQUIRE_REFERENCES");
  return env && std::string(env) == "1";
}

// The SmolLM2-135M-Instruct folder made by scripts/fetch-smollm2.sh (env ONEBIT_SMOLLM2
// overrides; else $ONEBIT_CACHE or ~/.cache/onebit, then models/SmolLM2-135M-Instruct-Q4_1).
inline std::filesystem::path smollm2_dir() {
  if (const char* env = std::getenv("ONEBIT_SMOLLM2")) return env;
  std::filesystem::path cache;
  if (const char* c = std::getenv("ONEBIT_CACHE")) cache = c;
  else if (const char* h = std::getenv("HOME")) cache = std::filesystem::path(h) / ".cache/onebit";
  return cache / "models/SmolLM2-135M-Instruct-Q4_1";
}

}  // namespace onebit::test

// OB_REQUIRE_OR_SKIP for a missing reference: a failure under ONEBIT_REQUIRE_REFERENCES=1.
#define OB_REFERENCE_OR_SKIP(cond, why)                                                 \
  do {                                                                                  \
    if (!(cond)) {                                                                      \
      if (::onebit::test::references_required())                                       \
        FAIL("missing reference (ONEBIT_REQUIRE_REFERENCES=1): " << std::string(why)); \
      ::onebit::test::skip(why);                                                        \
      return;                                                                           \
    }                                                                                   \
  } while (0)

// OB_SHARED_OR_SKIP of tests/support.h, as a reference.
#undef OB_SHARED_OR_SKIP
#define OB_SHARED_OR_SKIP(var, rel)                                                         \
  const std::filesystem::path var = ::onebit::test::shared_dir() / (rel);                   \
  OB_REFERENCE_OR_SKIP(std::filesystem::exists(var), "needs ../shared/" + std::string(rel) + \
                                                       " (absent: " + var.string() + ")")

// The SmolLM2 folder, or skip when scripts/fetch-smollm2.sh has not made it.
#define OB_SMOLLM2_OR_SKIP(var)                                                    \
  const std::filesystem::path var = ::onebit::test::smollm2_dir();                 \
  OB_REFERENCE_OR_SKIP(std::filesystem::exists(var / ".complete"),                 \
                       "needs SmolLM2 (run scripts/fetch-smollm2.sh; absent: " + var.string() + ")")
