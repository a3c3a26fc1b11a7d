// Helpers for the io and tokenizer tests: a temp folder and running the test Python.
#pragma once
#include <unistd.h>

#include <cstdio>
#include <cstdlib>
#include <filesystem>
#include <fstream>
#include <random>
#include <string>

#include "onebit/util/fs.h"
#include "tests/support.h"

namespace onebit::test {

// A fresh folder under the system temp dir, removed when the object dies.
struct TempDir {
  std::filesystem::path path;
  TempDir() {
    std::random_device rd;
    path = std::filesystem::temp_directory_path() /
           ("onebit-test-" + std::to_string(rd()) + std::to_string(rd()));
    std::filesystem::create_directories(path);
  }
  ~TempDir() { onebit::util::remove_tree(path); }
  std::string operator/(const std::string& name) const { return (path / name).string(); }
};

inline void write_text(const std::string& path, const std::string& text) {
  std::ofstream(path, std::ios::binary) << text;
}

inline std::string read_text(const std::string& path) {
  std::ifstream in(path, std::ios::binary);
  return std::string(std::istreambuf_iterator<char>(in), std::istreambuf_iterator<char>());
}

// Runs `code` with the test Python (args appended); true when it exits 0.
inline bool run_python(const std::string& code, const std::string& args = "", bool quiet = false) {
  const std::string py = python();
  if (py.empty()) return false;
  TempDir dir;
  const std::string script = dir / "script.py";
  write_text(script, code);
  std::string cmd = "'" + py + "' '" + script + "' " + args;
  if (quiet) cmd += " >/dev/null 2>&1";
  return std::system(cmd.c_str()) == 0;
}

// Whether the test Python imports all of `modules` (comma-separated, Python syntax).
inline bool python_has(const std::string& modules) {
  return run_python("import " + modules + "\n", "", /*quiet=*/true);
}

}  // namespace onebit::test
