// A fresh temporary folder per test, removed at scope exit.
#pragma once
#include <unistd.h>

#include <filesystem>
#include <string>

#include "onebit/util/fs.h"

namespace onebit::test {

using onebit::util::remove_tree;  // never std::filesystem::remove_all (see onebit/util/fs.h)

struct TempDir {
  std::filesystem::path path;
  explicit TempDir(const std::string& name)
      : path(std::filesystem::temp_directory_path() / ("onebit_" + name + "_" + std::to_string(::getpid()))) {
    remove_tree(path);
    std::filesystem::create_directories(path);
  }
  ~TempDir() { remove_tree(path); }
  std::string str(const std::string& sub = "") const { return sub.empty() ? path.string() : (path / sub).string(); }
};
}  // namespace onebit::test
