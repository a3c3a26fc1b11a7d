// Scratch files for the eval tests, under the build folder (one folder per test process).
#pragma once
#include <unistd.h>

#include <filesystem>
#include <fstream>
#include <string>

#include "tests/support.h"

namespace onebit::test {

inline std::filesystem::path eval_tmp_dir() {
  auto dir = binary_dir() / "test_tmp" / ("eval_" + std::to_string(::getpid()));
  std::filesystem::create_directories(dir);
  return dir;
}

inline std::string write_temp(const std::string& name, const std::string& contents) {
  auto path = eval_tmp_dir() / name;
  std::ofstream(path, std::ios::binary) << contents;
  return path.string();
}

}  // namespace onebit::test
