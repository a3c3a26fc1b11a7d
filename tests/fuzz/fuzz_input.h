// Helpers shared by the fuzz targets: a private scratch folder, writing the input into files,
// and the rule for what counts as a finding.
#pragma once
#include <unistd.h>

#include <algorithm>
#include <cstdint>
#include <cstdlib>
#include <filesystem>
#include <fstream>
#include <string>
#include <vector>

#include "onebit/core/error.h"
#include "onebit/util/fs.h"

namespace onebit::fuzz {

// One folder per process, emptied before each input and removed at exit.
inline const std::filesystem::path& scratch() {
  struct Dir {
    std::filesystem::path path =
        std::filesystem::temp_directory_path() / ("onebit-fuzz-" + std::to_string(::getpid()));
    Dir() { std::filesystem::create_directories(path); }
    ~Dir() { onebit::util::remove_tree(path); }
  };
  static const Dir dir;
  return dir.path;
}

inline std::filesystem::path fresh_scratch() {
  const auto& d = scratch();
  for (const auto& e : std::filesystem::directory_iterator(d)) onebit::util::remove_tree(e.path());
  return d;
}

inline void write_bytes(const std::filesystem::path& p, const std::string& bytes) {
  std::ofstream(p, std::ios::binary).write(bytes.data(), static_cast<std::streamsize>(bytes.size()));
}

// Splits the input at NUL bytes into at most `n` parts (the last keeps the rest).
inline std::vector<std::string> split_input(const uint8_t* data, size_t size, size_t n) {
  std::vector<std::string> parts(1);
  for (size_t i = 0; i < size; ++i) {
    if (data[i] == 0 && parts.size() < n) parts.emplace_back();
    else parts.back().push_back(static_cast<char>(data[i]));
  }
  parts.resize(n);
  return parts;
}

// Splits binary input into `n` parts: the first 2·(n−1) bytes give the sizes of the first n−1
// parts (little-endian uint16, cut to what is left); the last part keeps the rest.
inline std::vector<std::string> split_sized(const uint8_t* data, size_t size, size_t n) {
  std::vector<std::string> parts(n);
  const size_t head = 2 * (n - 1);
  if (size < head) return parts;
  size_t at = head;
  for (size_t i = 0; i + 1 < n; ++i) {
    const size_t want = data[2 * i] | (size_t(data[2 * i + 1]) << 8);
    const size_t len = std::min(want, size - at);
    parts[i].assign(reinterpret_cast<const char*>(data + at), len);
    at += len;
  }
  parts[n - 1].assign(reinterpret_cast<const char*>(data + at), size - at);
  return parts;
}

// A parser may reject input only with onebit::Error: the one-line error every program prints.
// Anything else (another exception type, a crash, a sanitizer report) is a finding.
template <class F>
int expect_clean(F&& f) {
  try {
    f();
  } catch (const onebit::Error&) {
  }
  return 0;
}

}  // namespace onebit::fuzz

// Defines the target `onebit::fuzz::NAME(data, size)`. Built by scripts/fuzz.sh (ONEBIT_LIBFUZZER)
// it is also libFuzzer's entry point; in the Catch2 suite, tests/fuzz/test_fuzz_replay.cpp runs
// it over the seed corpus and deterministic mutations of it.
#if defined(ONEBIT_LIBFUZZER)
#define ONEBIT_FUZZ_TARGET(NAME)                                                          \
  namespace onebit::fuzz {                                                                \
  int NAME(const uint8_t* data, size_t size);                                             \
  }                                                                                       \
  extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {               \
    return onebit::fuzz::NAME(data, size);                                                \
  }                                                                                       \
  int onebit::fuzz::NAME(const uint8_t* data, size_t size)
#else
#define ONEBIT_FUZZ_TARGET(NAME) int onebit::fuzz::NAME(const uint8_t* data, size_t size)
#endif

namespace onebit::fuzz {
int safetensors(const uint8_t* data, size_t size);
int config(const uint8_t* data, size_t size);
int tokenizer(const uint8_t* data, size_t size);
int token_dataset(const uint8_t* data, size_t size);
int eval_tasks(const uint8_t* data, size_t size);
int packed_model(const uint8_t* data, size_t size);
}  // namespace onebit::fuzz
