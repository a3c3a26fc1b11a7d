// A fresh temporary folder per test, removed at scope exit.
#pragma once
#include <unistd.h>

#include <filesystem>
#include <string>

namespace onebit::test {

// std::filesystem::remove_all resolves to the copy inside the torch wheel's libtorch.so,
// built with a newer libstdc++: it calls a weak symbol that GCC 12 lacks and crashes.
inline void remove_tree(const std::filesystem::path& p) {
  std::error_code ec;
  if (std::filesystem::is_directory(std::filesystem::symlink_status(p, ec)))
    for (const auto& e : std::filesystem::directory_iterator(p, ec)) remove_tree(e.path());
  std::filesystem::remove(p, ec);
}

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
